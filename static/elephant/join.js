/* The waiting room: live progress of the participant's desktop, a camera and microphone check,
   then the desktop. Progress comes from the status push on /ws/signalling/ (subscribe); the
   join endpoint's JSON is polled as well, often while the socket is down, rarely while it is up. */
(function () {
  "use strict";

  var page = document.getElementById("waiting");
  if (!page || !page.dataset.meetingId) return;

  var STATUS_STEP = {
    SCHEDULED: "scheduled",
    LAUNCHING: "launching",
    LAUNCHED: "booting",
    DNS_WRITTEN: "health",
    HEALTHY: "ready",
    IN_PROGRESS: "ready"
  };
  var STEP_ORDER = ["scheduled", "launching", "booting", "health", "ready"];
  // A meeting only ever moves forward through these (section 3); terminal statuses are not listed.
  var STATUS_ORDER = ["SCHEDULED", "LAUNCHING", "LAUNCHED", "DNS_WRITTEN", "HEALTHY", "IN_PROGRESS"];
  var STATE_TEXT = { done: "done", current: "in progress", todo: "to do" };
  var POLL_SOCKET_DOWN_MS = 4000;
  var POLL_SOCKET_UP_MS = 20000;
  var DCV_URL_FRESH_MS = 60000; // DCV auth tokens live ELEPHANT_DCV_TOKEN_TTL_SECONDS (120 s by default)
  var REDIRECT_DELAY_MS = 1500;
  var TOO_EARLY_RETRY_MS = 10000;

  var data = page.dataset;
  var meetingId = data.meetingId;
  var token = data.token;
  var autoRedirect = data.autoRedirect === "true";
  var joinUrl = location.pathname + "?t=" + encodeURIComponent(token);

  var messageEl = document.getElementById("message");
  var nextStepEl = document.getElementById("next-step");
  var openButton = document.getElementById("open-desktop");
  var roomButton = document.getElementById("open-room");
  var redirectNote = document.getElementById("redirect-note");
  var devices = document.getElementById("devices");

  var state = {
    code: Number(data.code),
    status: data.status,
    finished: data.final === "true" || (data.code !== "200" && data.code !== "202"),
    dcvUrl: data.code === "200" ? openButton.getAttribute("href") : "",
    dcvUrlAt: Date.now(),
    redirected: false,
    devices: devices ? "checking" : "none",
    socket: null,
    socketUp: false,
    socketDelay: 1000,
    pollTimer: null,
    answers: 0
  };

  // An answer or push older than what the page shows already: a poll sent before a status push
  // can come back after it, and the steps must never go back.
  function stale(status) {
    var at = STATUS_ORDER.indexOf(status);
    return at !== -1 && at < STATUS_ORDER.indexOf(state.status);
  }

  // --- progress steps -----------------------------------------------------------------------
  function showStep(status, linkReady) {
    var at = STATUS_STEP[status];
    if (!at) return;
    if (at === "ready" && !linkReady) at = "health";
    var position = STEP_ORDER.indexOf(at);
    document.querySelectorAll("#steps li[data-step]").forEach(function (li) {
      var index = STEP_ORDER.indexOf(li.dataset.step);
      var stepState = index < position || (index === position && at === "ready") ? "done" : index === position ? "current" : "todo";
      li.dataset.state = stepState;
      var text = li.querySelector(".step-state");
      if (text) text.textContent = STATE_TEXT[stepState];
    });
    page.dataset.status = status;
  }

  function say(message, next) {
    if (message) messageEl.textContent = message;
    if (next !== undefined && nextStepEl) nextStepEl.textContent = next;
  }

  // --- the join endpoint --------------------------------------------------------------------
  function poll() {
    clearTimeout(state.pollTimer);
    if (state.finished) return Promise.resolve();
    return fetch(joinUrl, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "omit" })
      .then(function (response) {
        return response.json().then(function (body) {
          handleJoinAnswer(response.status, body);
        });
      })
      .catch(function () {
        say("We can't reach Elephant right now; retrying…");
      })
      .then(schedulePoll);
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    if (state.finished) return;
    state.pollTimer = setTimeout(poll, state.socketUp ? POLL_SOCKET_UP_MS : POLL_SOCKET_DOWN_MS);
  }

  function handleJoinAnswer(code, body) {
    state.answers += 1;
    if (code === 202 && stale(body.status)) return;
    state.code = code;
    if (code === 200 && body.dcv_url) {
      state.dcvUrl = body.dcv_url;
      state.dcvUrlAt = Date.now();
      showStep(body.status || "HEALTHY", true);
      ready();
      return;
    }
    if (code === 202) {
      state.status = body.status;
      showStep(body.status, false);
      if (body.final) {
        finish(body.message, finalAdvice(body.status));
      } else {
        say(body.message);
      }
      return;
    }
    finish(body.message || "This link can't be used now.", body.code === "expired" ? "If you still need the session, ask your teacher to schedule a new one." : "");
  }

  function finalAdvice(status) {
    if (status === "CANCELLED") return "Nothing to do here: ask your teacher for a new link if the session was moved.";
    if (status === "FAILED") return "Our team has been told. Ask your teacher to schedule the session again; the new link will work.";
    return "Thank you! Ask your teacher if you need another session.";
  }

  function finish(message, advice) {
    state.finished = true;
    clearTimeout(state.pollTimer);
    page.dataset.final = "true";
    say(message, advice);
    var steps = document.getElementById("steps");
    if (steps) steps.hidden = true;
    if (devices) devices.hidden = true;
    if (roomButton) roomButton.hidden = true;
    stopPreview();
    if (state.socket) state.socket.close(1000);
  }

  // --- ready: open the desktop --------------------------------------------------------------
  function ready() {
    state.finished = true; // nothing more to follow
    clearTimeout(state.pollTimer);
    page.dataset.ready = "true";
    openButton.href = state.dcvUrl;
    openButton.hidden = false;
    say("Your desktop is ready.", "");
    if (state.socket) state.socket.close(1000);
    maybeRedirect();
  }

  function maybeRedirect() {
    if (!state.dcvUrl || state.redirected || !autoRedirect) return;
    if (state.devices === "checking") {
      showNote("Your desktop is ready; it opens as soon as your browser has allowed the camera and microphone.");
      return;
    }
    if (state.devices === "denied") {
      showNote("Your desktop is ready. Allow the camera and microphone (see below), or open it anyway.");
      openButton.textContent = "Open my desktop anyway";
      return;
    }
    showNote("Opening your desktop…");
    setTimeout(openDesktop, REDIRECT_DELAY_MS);
  }

  function showNote(text) {
    redirectNote.textContent = text;
    redirectNote.hidden = false;
  }

  function openDesktop() {
    if (state.redirected) return;
    state.redirected = true;
    var go = function () {
      stopPreview();
      location.assign(state.dcvUrl);
    };
    if (Date.now() - state.dcvUrlAt < DCV_URL_FRESH_MS) return go();
    // The desktop link carries a short-lived single-use token: ask for a fresh one.
    fetch(joinUrl, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "omit" })
      .then(function (response) {
        return response.json().then(function (body) {
          if (response.status === 200 && body.dcv_url) {
            state.dcvUrl = body.dcv_url;
            state.dcvUrlAt = Date.now();
            return go();
          }
          state.redirected = false;
          handleJoinAnswer(response.status, body);
        });
      })
      .catch(function () {
        state.redirected = false;
        say("We can't reach Elephant right now. Try again in a moment.");
      });
  }

  openButton.addEventListener("click", function (event) {
    event.preventDefault();
    state.redirected = false;
    openDesktop();
  });

  // Back from the desktop (page restored from the back/forward cache): its token is spent.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && state.dcvUrl) {
      state.dcvUrlAt = 0;
      state.redirected = true; // no second automatic redirect; the button gets a fresh link
      redirectNote.hidden = true;
    }
  });

  // --- live status over the signalling socket -----------------------------------------------
  function connectSocket() {
    if (state.finished || !window.WebSocket) return;
    var socket;
    try {
      socket = new WebSocket(Elephant.socketUrl());
    } catch (e) {
      return;
    }
    state.socket = socket;
    socket.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame.type === "connected") {
        socket.send(JSON.stringify({ action: "subscribe", meetingId: meetingId, token: token }));
      } else if (frame.type === "status" && frame.meetingId === meetingId) {
        state.socketUp = true;
        state.socketDelay = 1000;
        page.dataset.live = "socket";
        schedulePoll();
        if (!stale(frame.status) && (frame.status !== state.status || frame.ready || frame.terminal)) {
          state.status = frame.status;
          showStep(frame.status, false);
          poll(); // the join endpoint has the message, the desktop link and the final word
        }
      } else if (frame.type === "error" && frame.action === "subscribe") {
        socket.close(1000);
      }
    };
    var pinger = setInterval(function () {
      if (socket.readyState === 1) socket.send(JSON.stringify({ action: "ping" }));
    }, 25000);
    socket.onclose = function () {
      clearInterval(pinger);
      if (state.socket !== socket) return;
      state.socket = null;
      state.socketUp = false;
      page.dataset.live = "polling";
      if (state.finished) return;
      schedulePoll();
      setTimeout(connectSocket, state.socketDelay);
      state.socketDelay = Math.min(state.socketDelay * 2, 30000);
    };
  }

  // --- camera and microphone ----------------------------------------------------------------
  var preview = document.getElementById("preview");
  var deviceState = document.getElementById("device-state");
  var deviceHelp = document.getElementById("device-help");
  var deviceRetry = document.getElementById("device-retry");
  var previewStream = null;

  function setDevices(value, text) {
    state.devices = value;
    if (!devices) return;
    devices.dataset.state = value;
    deviceState.textContent = text;
    deviceHelp.hidden = value !== "denied";
    deviceRetry.hidden = value === "granted" || value === "checking" || value === "unsupported";
    maybeRedirect();
  }

  function stopPreview() {
    if (previewStream) {
      previewStream.getTracks().forEach(function (track) {
        track.stop();
      });
      previewStream = null;
    }
  }

  function checkDevices() {
    if (!devices) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setDevices("unsupported", "This browser can't check the camera and microphone from this page (it needs a secure https address). Your desktop will ask for them.");
      return;
    }
    setDevices("checking", "Checking that your browser may use them… Choose Allow if it asks.");
    navigator.mediaDevices
      .getUserMedia({ audio: true, video: true })
      .then(function (stream) {
        stopPreview();
        previewStream = stream;
        preview.srcObject = stream;
        setDevices("granted", "Camera and microphone are allowed and working.");
      })
      .catch(function (error) {
        var name = error && error.name;
        if (name === "NotAllowedError" || name === "SecurityError") {
          setDevices("denied", "Camera or microphone blocked.");
        } else if (name === "NotFoundError" || name === "OverconstrainedError") {
          setDevices("missing", "No camera or microphone found. Plug one in and choose Check again, or continue without.");
        } else if (name === "NotReadableError" || name === "AbortError") {
          setDevices("busy", "Your camera or microphone is busy in another app. Close it and choose Check again.");
        } else {
          setDevices("missing", "We couldn't check your camera and microphone. You can continue without.");
        }
      });
  }

  if (deviceRetry) deviceRetry.addEventListener("click", checkDevices);
  window.addEventListener("pagehide", stopPreview);

  // --- too early: open by itself when the link starts working --------------------------------
  // This device's clock may run ahead of Elephant's: when the link should be open by it but is
  // not, ask Elephant again every few seconds instead of waiting for a moment already past.
  function reloadWhenOpen() {
    fetch(joinUrl, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "omit" })
      .then(function (response) {
        return response.json();
      })
      .then(function (body) {
        if (body.code === "too_early") setTimeout(reloadWhenOpen, TOO_EARLY_RETRY_MS);
        else location.reload();
      })
      .catch(function () {
        setTimeout(reloadWhenOpen, TOO_EARLY_RETRY_MS);
      });
  }

  if (data.reason === "too_early" && data.opensAt) {
    var wait = new Date(data.opensAt).getTime() - Date.now();
    if (wait < 2147483647) setTimeout(reloadWhenOpen, Math.max(wait, 0) + 1000);
  }

  // --- start ---------------------------------------------------------------------------------
  window.elephantWaiting = state; // for the browser tests and for support staff in the console
  if (state.code === 200) {
    checkDevices();
    ready();
  } else if (!state.finished) {
    page.dataset.live = "polling";
    checkDevices();
    connectSocket();
    schedulePoll();
  }
})();
