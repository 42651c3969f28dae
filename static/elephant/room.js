/* The video room: one RTCPeerConnection to the other participant, signalled over /ws/signalling/.

   Who offers: the one who arrives (its "joined" frame lists someone already there) offers; the
   one already there resets and answers ("newParticipant"). A reload or a dropped socket is an
   arrival with a new connection id, so the call is negotiated again from scratch. Peer messages
   are our own JSON strings relayed as whole frames ({type: offer|answer|candidate|bye|ready,
   from, to}); frames addressed to another connection are ignored. If both sides offer at once
   (both came back together), the side with the greater connection id yields. */
(function () {
  "use strict";

  var configEl = document.getElementById("room-config");
  if (!configEl) return;
  var config = JSON.parse(configEl.textContent);

  var NO_OFFER_MS = 5000; // an answerer that got no offer asks for one
  var DISCONNECTED_MS = 4000; // "disconnected" this long: negotiate again
  var STUCK_MS = 20000; // never connected: negotiate again
  var PING_MS = 25000;

  var $ = function (id) {
    return document.getElementById(id);
  };
  var localVideo = $("local-video");
  var remoteVideo = $("remote-video");
  var stateEl = $("conn-state");
  var micButton = $("toggle-mic");
  var camButton = $("toggle-cam");
  var soundButton = $("unmute-sound");
  var leaveButton = $("leave");
  var rejoinButton = $("rejoin");
  var mediaError = $("media-error");
  var other = config.otherName;

  var room = {
    ws: null,
    connectionId: null,
    peerId: null,
    pc: null,
    offerer: false,
    stream: null,
    remoteStream: null,
    candidates: [],
    iceServers: config.iceServers,
    iceExpiresAt: config.iceExpiresAt,
    socketDelay: 500,
    left: false,
    closed: false,
    timers: {},
    state: "starting"
  };
  window.elephantRoom = room; // read by the browser tests (room.pc.connectionState)

  // --- visible state --------------------------------------------------------------------------
  function setState(state, text) {
    room.state = state;
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  function showPeerState() {
    if (room.closed || room.left) return;
    if (!room.ws || room.ws.readyState !== 1) {
      setState("reconnecting", "Connection to Elephant lost, reconnecting…");
    } else if (!room.peerId) {
      setState("waiting", "Waiting for " + other + " to join…");
    } else if (room.pc && room.pc.connectionState === "connected") {
      setState("connected", "Connected with " + other);
    } else if (room.pc && (room.pc.connectionState === "disconnected" || room.pc.connectionState === "failed")) {
      setState("reconnecting", "Connection with " + other + " interrupted, reconnecting…");
    } else {
      setState("connecting", "Connecting to " + other + "…");
    }
    $("remote-empty").hidden = !!(room.pc && room.pc.connectionState === "connected");
    if (!room.peerId) $("remote-empty").textContent = "Waiting for " + other + " to join…";
  }

  function timer(name, ms, fn) {
    clearTimeout(room.timers[name]);
    room.timers[name] = ms === null ? undefined : setTimeout(fn, ms);
  }

  // --- local media ----------------------------------------------------------------------------
  function startMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMediaError("This browser can't use the camera on this page (it needs a secure https address). You can still see and hear " + other + ".");
      return Promise.resolve(null);
    }
    return navigator.mediaDevices
      .getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } })
      .catch(function (error) {
        var name = error && error.name;
        showMediaError(
          name === "NotAllowedError"
            ? "Your browser blocked the camera and microphone. Allow them (the icon left of the address bar) and choose Join again; meanwhile you can still see and hear " + other + "."
            : "No camera or microphone could be used (" + (name || "error") + "). You can still see and hear " + other + "."
        );
        return null;
      })
      .then(function (stream) {
        room.stream = stream;
        if (stream) localVideo.srcObject = stream;
        micButton.disabled = !stream || !stream.getAudioTracks().length;
        camButton.disabled = !stream || !stream.getVideoTracks().length;
        return stream;
      });
  }

  function showMediaError(text) {
    mediaError.textContent = text;
    mediaError.hidden = false;
  }

  function toggle(kind, button, onText, offText) {
    if (!room.stream) return;
    var tracks = kind === "audio" ? room.stream.getAudioTracks() : room.stream.getVideoTracks();
    var off = tracks.length && tracks[0].enabled;
    tracks.forEach(function (track) {
      track.enabled = !off;
    });
    button.setAttribute("aria-pressed", off ? "true" : "false");
    button.textContent = off ? offText : onText;
    if (kind === "video") $("local-empty").hidden = !off;
  }

  micButton.addEventListener("click", function () {
    toggle("audio", micButton, "Mute", "Unmute");
  });
  camButton.addEventListener("click", function () {
    toggle("video", camButton, "Turn camera off", "Turn camera on");
  });
  soundButton.addEventListener("click", function () {
    remoteVideo.muted = false;
    remoteVideo.play().catch(function () {});
    soundButton.hidden = true;
  });

  // --- signalling socket ----------------------------------------------------------------------
  function connectSocket() {
    if (room.left || room.closed) return;
    var ws = new WebSocket(Elephant.socketUrl());
    room.ws = ws;
    ws.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame === "object") handle(frame);
    };
    ws.onclose = function (event) {
      if (room.ws !== ws) return;
      room.ws = null;
      timer("ping", null);
      if (room.left || room.closed) return;
      if (event.code === 4009) return close("This room is open in another tab or device. Use that one, or reload this page to move here.");
      if (event.code === 4003) return close("This link is not valid for this room. Ask your teacher for the link again.");
      showPeerState();
      timer("socket", room.socketDelay, connectSocket);
      room.socketDelay = Math.min(room.socketDelay * 2, 8000);
    };
  }

  function send(frame) {
    if (room.ws && room.ws.readyState === 1) room.ws.send(JSON.stringify(frame));
  }

  function signal(message) {
    message.from = room.connectionId;
    message.to = room.peerId;
    send({ action: "sendMsgToRoom", roomId: config.roomId, message: JSON.stringify(message) });
  }

  function ping() {
    send({ action: "ping" });
    timer("ping", PING_MS, ping);
  }

  function handle(frame) {
    if (frame.to && frame.to !== room.connectionId) return; // a peer message for someone else
    switch (frame.type) {
      case "connected":
        room.connectionId = frame.connectionId;
        send({ action: "joinRoom", roomId: config.roomId, token: config.token || undefined });
        timer("ping", PING_MS, ping);
        break;
      case "joined":
        room.socketDelay = 500;
        if (frame.participants && frame.participants.length) {
          call(frame.participants[frame.participants.length - 1]);
        } else {
          hangUp();
        }
        break;
      case "newParticipant":
        if (frame.participantConnectionId !== room.peerId) {
          await_(frame.participantConnectionId);
        }
        break;
      case "participantLeft":
        if (frame.participantConnectionId === room.peerId) hangUp(other + " left. Waiting for them to come back…");
        break;
      case "bye":
        if (frame.from === room.peerId) hangUp(other + " left. Waiting for them to come back…");
        break;
      case "ready":
        if (frame.from === room.peerId || !room.peerId) call(frame.from);
        break;
      case "offer":
        onOffer(frame);
        break;
      case "answer":
        onAnswer(frame);
        break;
      case "candidate":
        onCandidate(frame);
        break;
      case "error":
        onError(frame);
        break;
    }
  }

  function onError(frame) {
    if (frame.code === "room_closed" || frame.code === "forbidden" || frame.code === "room_full") {
      close(frame.message || "You can't enter this room now.");
    } else if (frame.code === "unavailable" && frame.action === "joinRoom") {
      timer("rejoin", 2000, function () {
        send({ action: "joinRoom", roomId: config.roomId, token: config.token || undefined });
      });
    }
  }

  function close(text) {
    room.closed = true;
    hangUp();
    setState("closed", text);
    if (room.ws) room.ws.close(1000);
  }

  // --- the peer connection --------------------------------------------------------------------
  function newPeerConnection(offerer) {
    var pc = new RTCPeerConnection({ iceServers: room.iceServers });
    room.pc = pc;
    room.offerer = offerer;
    room.candidates = [];
    room.remoteStream = new MediaStream();
    remoteVideo.srcObject = room.remoteStream;
    pc.onicecandidate = function (event) {
      if (event.candidate && room.pc === pc) signal({ type: "candidate", candidate: event.candidate.toJSON() });
    };
    pc.ontrack = function (event) {
      if (room.pc !== pc) return;
      room.remoteStream.addTrack(event.track);
      playRemote();
    };
    pc.onconnectionstatechange = function () {
      if (room.pc !== pc) return;
      var state = pc.connectionState;
      showPeerState();
      if (state === "connected") {
        timer("recover", null);
        timer("stuck", null);
        playRemote();
      } else if (state === "disconnected") {
        timer("recover", DISCONNECTED_MS, recover);
      } else if (state === "failed") {
        recover();
      }
    };
    timer("stuck", STUCK_MS, function () {
      if (room.pc === pc && pc.connectionState !== "connected") recover();
    });
    return pc;
  }

  function addLocalMedia(pc) {
    var stream = room.stream;
    ["audio", "video"].forEach(function (kind) {
      var track = stream && stream[kind === "audio" ? "getAudioTracks" : "getVideoTracks"]()[0];
      if (track) pc.addTrack(track, stream);
      else if (room.offerer) pc.addTransceiver(kind, { direction: "recvonly" });
    });
  }

  function playRemote() {
    var playing = remoteVideo.play();
    if (playing && playing.catch) {
      playing.catch(function () {
        // Autoplay with sound refused until the user interacts: play muted and offer sound.
        remoteVideo.muted = true;
        soundButton.hidden = false;
        remoteVideo.play().catch(function () {});
      });
    }
  }

  function closePeer() {
    timer("recover", null);
    timer("stuck", null);
    timer("offer", null);
    if (room.pc) {
      room.pc.onicecandidate = room.pc.ontrack = room.pc.onconnectionstatechange = null;
      room.pc.close();
      room.pc = null;
    }
    remoteVideo.srcObject = null;
  }

  function hangUp(text) {
    closePeer();
    room.peerId = null;
    showPeerState();
    if (text) {
      $("remote-empty").textContent = text;
      stateEl.textContent = text;
    }
  }

  // Arrived second (or again): offer to the one already there.
  function call(peerId) {
    closePeer();
    room.peerId = peerId;
    var pc = newPeerConnection(true);
    addLocalMedia(pc);
    showPeerState();
    pc.createOffer()
      .then(function (offer) {
        if (room.pc !== pc) return;
        return pc.setLocalDescription(offer).then(function () {
          signal({ type: "offer", sdp: pc.localDescription.sdp });
        });
      })
      .catch(function (error) {
        console.warn("offer failed", error);
        timer("recover", 1000, recover);
      });
  }

  // Someone arrived: forget the old call and wait for their offer (asking for one if it is late).
  function await_(peerId) {
    closePeer();
    room.peerId = peerId;
    showPeerState();
    timer("offer", NO_OFFER_MS, function () {
      if (room.peerId === peerId && !room.pc) signal({ type: "ready" });
    });
  }

  function onOffer(frame) {
    if (room.pc && frame.from === room.peerId && room.pc.signalingState === "have-local-offer" && room.connectionId < frame.from) {
      return; // both offered at once: ours wins, theirs is dropped (they answer ours)
    }
    closePeer();
    room.peerId = frame.from;
    var pc = newPeerConnection(false);
    pc.setRemoteDescription({ type: "offer", sdp: frame.sdp })
      .then(function () {
        if (room.pc !== pc) return;
        addLocalMedia(pc);
        flushCandidates(pc);
        return pc.createAnswer().then(function (answer) {
          return pc.setLocalDescription(answer).then(function () {
            signal({ type: "answer", sdp: pc.localDescription.sdp });
          });
        });
      })
      .catch(function (error) {
        console.warn("answer failed", error);
        timer("recover", 1000, recover);
      });
    showPeerState();
  }

  function onAnswer(frame) {
    var pc = room.pc;
    if (!pc || frame.from !== room.peerId || pc.signalingState !== "have-local-offer") return;
    pc.setRemoteDescription({ type: "answer", sdp: frame.sdp })
      .then(function () {
        flushCandidates(pc);
      })
      .catch(function (error) {
        console.warn("bad answer", error);
        timer("recover", 1000, recover);
      });
  }

  function onCandidate(frame) {
    var pc = room.pc;
    if (!pc || frame.from !== room.peerId || !frame.candidate) return;
    if (!pc.remoteDescription) {
      room.candidates.push(frame.candidate);
      return;
    }
    pc.addIceCandidate(frame.candidate).catch(function () {});
  }

  function flushCandidates(pc) {
    var pending = room.candidates;
    room.candidates = [];
    pending.forEach(function (candidate) {
      pc.addIceCandidate(candidate).catch(function () {});
    });
  }

  // The media path broke while both are still here: the offerer offers again, the answerer asks.
  function recover() {
    if (!room.peerId || room.left || room.closed) return;
    refreshIceServers();
    if (room.offerer) {
      call(room.peerId);
    } else {
      var peerId = room.peerId;
      await_(peerId);
      signal({ type: "ready" });
    }
  }

  // --- TURN credentials expire: fetch fresh ones for the next negotiation --------------------
  function refreshIceServers() {
    if (!room.iceExpiresAt || Date.now() / 1000 < room.iceExpiresAt - 600) return;
    fetch(location.pathname + location.search, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) return;
        room.iceServers = body.iceServers;
        room.iceExpiresAt = body.expiresAt;
        if (room.pc && room.pc.setConfiguration) {
          try {
            room.pc.setConfiguration({ iceServers: room.iceServers });
          } catch (e) {
            /* applies to the next connection */
          }
        }
      })
      .catch(function () {});
  }
  setInterval(refreshIceServers, 60000);

  // --- leave and come back --------------------------------------------------------------------
  leaveButton.addEventListener("click", function () {
    room.left = true;
    signal({ type: "bye" });
    send({ action: "leaveRoom", roomId: config.roomId });
    closePeer();
    room.peerId = null;
    if (room.ws) room.ws.close(1000);
    if (room.stream) room.stream.getTracks().forEach(function (track) {
      track.stop();
    });
    room.stream = null;
    localVideo.srcObject = null;
    setState("left", "You left the room.");
    leaveButton.hidden = true;
    micButton.disabled = camButton.disabled = true;
    rejoinButton.hidden = false;
    rejoinButton.focus();
  });
  rejoinButton.addEventListener("click", function () {
    location.reload();
  });
  window.addEventListener("pagehide", function () {
    if (!room.left) signal({ type: "bye" });
  });

  // --- start -----------------------------------------------------------------------------------
  setState("starting", "Starting your camera…");
  startMedia().then(function () {
    setState("connecting", "Connecting to Elephant…");
    connectSocket();
  });
})();
