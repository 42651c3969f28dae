/* Elephant: helpers shared by the pages. Plain JavaScript, no build step. */
(function () {
  "use strict";

  var STYLES = {
    full: { weekday: "long", day: "numeric", month: "long", year: "numeric", hour: "2-digit", minute: "2-digit" },
    short: { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" },
    time: { hour: "2-digit", minute: "2-digit" }
  };

  function viewerZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  // Every <time class="local-time" datetime="ISO"> is shown in the viewer's own time zone.
  function localTimes(root) {
    var zone = viewerZone();
    (root || document).querySelectorAll("time.local-time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      var style = STYLES[el.dataset.style || "full"] || STYLES.full;
      var text = new Intl.DateTimeFormat(undefined, style).format(when);
      if (!el.title) el.title = el.textContent.trim();
      el.textContent = zone && el.dataset.zone !== "hide" ? text + " (" + zone.replace(/_/g, " ") + ")" : text;
    });
  }

  function socketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/signalling/";
  }

  window.Elephant = { localTimes: localTimes, socketUrl: socketUrl, viewerZone: viewerZone };
  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
  });
})();
