/* Teacher pages: copy buttons, the meeting's live status, and the schedule form's inline checks. */
(function () {
  "use strict";

  // --- copy buttons ---------------------------------------------------------------------------
  var copyStatus = document.getElementById("copy-status");
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var label = button.textContent;
    button.setAttribute("aria-label", "Copy " + document.querySelector("label[for='" + button.dataset.copy + "']").textContent.toLowerCase());
    button.addEventListener("click", function () {
      var input = document.getElementById(button.dataset.copy);
      input.select();
      var copied = navigator.clipboard && window.isSecureContext ? navigator.clipboard.writeText(input.value) : Promise.reject();
      copied
        .catch(function () {
          document.execCommand("copy");
        })
        .then(function () {
          button.textContent = "Copied";
          button.classList.add("copied");
          if (copyStatus) copyStatus.textContent = "Link copied to the clipboard.";
          setTimeout(function () {
            button.textContent = label;
            button.classList.remove("copied");
          }, 2000);
        });
    });
  });

  // --- the meeting page: the session time in the teacher's browser zone, when it differs ----
  document.querySelectorAll("time[data-meeting-zone]").forEach(function (el) {
    if (el.dataset.meetingZone !== Elephant.viewerZone()) el.closest(".local-hint").hidden = false;
  });

  // --- the meeting page: live status ----------------------------------------------------------
  var meetingEl = document.getElementById("meeting");
  if (meetingEl) followStatus(meetingEl);

  function followStatus(el) {
    var meetingId = el.dataset.meetingId;
    var badge = document.getElementById("meeting-status");
    var detail = document.getElementById("status-detail");
    var pollTimer = null;
    var socketUp = false;
    var delay = 1000;
    var TERMINAL = ["TERMINATED", "CANCELLED", "FAILED"];

    function refresh() {
      clearTimeout(pollTimer);
      return fetch(location.pathname, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (body) {
          if (body) show(body);
        })
        .catch(function () {})
        .then(function () {
          if (TERMINAL.indexOf(el.dataset.status) === -1) pollTimer = setTimeout(refresh, socketUp ? 30000 : 5000);
        });
    }

    function show(body) {
      var changed = body.status !== el.dataset.status;
      el.dataset.status = body.status;
      badge.textContent = body.statusDisplay;
      badge.className = "badge s-" + body.status.toLowerCase();
      detail.textContent = body.hint + (body.reason ? " " + body.reasonDisplay + " (" + body.reason + ")" : "");
      if (changed) {
        var cancel = document.getElementById("cancel-form");
        if (cancel && body.status !== "SCHEDULED") cancel.hidden = true;
      }
    }

    function connect() {
      if (!window.WebSocket || TERMINAL.indexOf(el.dataset.status) !== -1) return;
      var socket = new WebSocket(Elephant.socketUrl());
      var pinger = setInterval(function () {
        if (socket.readyState === 1) socket.send(JSON.stringify({ action: "ping" }));
      }, 25000);
      socket.onmessage = function (event) {
        var frame = JSON.parse(event.data);
        if (frame.type === "connected") {
          socket.send(JSON.stringify({ action: "subscribe", meetingId: meetingId })); // the login session is the proof
        } else if (frame.type === "status" && frame.meetingId === meetingId) {
          socketUp = true;
          delay = 1000;
          if (frame.status !== el.dataset.status) refresh();
        } else if (frame.type === "error" && frame.action === "subscribe") {
          socket.close(1000);
        }
      };
      socket.onclose = function () {
        clearInterval(pinger);
        socketUp = false;
        if (TERMINAL.indexOf(el.dataset.status) !== -1) return;
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }

    connect();
    pollTimer = setTimeout(refresh, 5000);
  }

  // --- the schedule form ----------------------------------------------------------------------
  var form = document.getElementById("schedule-form");
  if (form) scheduleForm(form);

  function scheduleForm(form) {
    var zone = Elephant.viewerZone();
    var select = form.querySelector("select[name=time_zone]");
    var hint = document.getElementById("tz-hint");
    if (select && zone) {
      var known = Array.prototype.some.call(select.options, function (option) {
        return option.value === zone;
      });
      if (form.dataset.bound !== "true" && known) select.value = zone;
      document.cookie = "tz=" + encodeURIComponent(zone) + ";path=/;max-age=31536000;samesite=lax";
      if (hint) hint.textContent = "Your browser's time zone is " + zone.replace(/_/g, " ") + (known ? "." : "; pick the closest one.");
    }

    function check(input) {
      var message = "";
      var value = input.value.trim();
      if (input.required && !value) {
        message = input.type === "date" && input.validity.badInput ? "Enter a valid date." : "This field is required.";
      } else if (input.type === "email" && value && !input.validity.valid) {
        message = "Enter a valid email address.";
      } else if ((input.type === "date" || input.type === "time") && input.validity.badInput) {
        message = input.type === "date" ? "Enter a valid date." : "Enter a valid time.";
      }
      var box = document.getElementById(input.id + "_error");
      var field = input.closest(".field");
      if (!box) return !message;
      if (message) {
        box.innerHTML = "";
        var p = document.createElement("p");
        p.textContent = message;
        box.appendChild(p);
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", box.id);
        field.classList.add("has-error");
        input.dataset.jsError = "1";
      } else if (input.dataset.jsError || input.value !== input.dataset.initial) {
        // The server's message stays until the teacher changes what it was about.
        box.innerHTML = "";
        input.removeAttribute("aria-invalid");
        field.classList.remove("has-error");
        delete input.dataset.jsError;
      }
      input.dataset.checked = "1";
      return !message;
    }

    // A message appearing on blur moves the button away between mousedown and mouseup, and the
    // click is lost: while the button is being pressed, the submit check does the work instead.
    var pressing = false;
    var submit = form.querySelector("button[type=submit]");
    submit.addEventListener("mousedown", function () {
      pressing = true;
      setTimeout(function () {
        pressing = false;
      }, 1000);
    });
    var inputs = form.querySelectorAll("input:not([type=hidden]), select");
    inputs.forEach(function (input) {
      input.dataset.initial = input.value;
      input.addEventListener("blur", function () {
        if (!pressing) check(input);
      });
      input.addEventListener("input", function () {
        if (input.dataset.checked) check(input);
      });
    });
    form.addEventListener("submit", function (event) {
      var firstBad = null;
      inputs.forEach(function (input) {
        if (!check(input) && !firstBad) firstBad = input;
      });
      if (firstBad) {
        event.preventDefault();
        firstBad.focus();
      }
    });
  }
})();
