// The order page, enhanced: copy buttons, a countdown, and a status that updates by itself.
// Everything here is optional: without JavaScript the page refreshes itself instead.
(function () {
  "use strict";

  function enhanceCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) { return; }
      var label = button.textContent;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
          button.classList.add("done");
          setTimeout(function () { button.textContent = label; button.classList.remove("done"); }, 2000);
        });
      });
    });
  }

  function startCountdowns(root) {
    root.querySelectorAll("[data-countdown]").forEach(function (el) {
      var end = Date.now() + 1000 * parseInt(el.getAttribute("data-countdown"), 10);
      function tick() {
        var left = Math.max(0, Math.round((end - Date.now()) / 1000));
        var d = Math.floor(left / 86400), h = Math.floor((left % 86400) / 3600);
        var m = Math.floor((left % 3600) / 60), s = left % 60;
        el.textContent = d ? d + " d " + h + " h " + m + " min"
          : (h ? h + " h " : "") + m + " min " + (s < 10 ? "0" : "") + s + " s";
        if (left > 0 && el.isConnected) { setTimeout(tick, 1000); }
      }
      tick();
    });
  }

  function enhance(root) { enhanceCopy(root); startCountdowns(root); }

  var POLL_MS = 2500;

  function poll() {
    var state = document.getElementById("order-state");
    if (!state || state.hasAttribute("data-final")) { return; }
    fetch(state.getAttribute("data-status-url"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return null; }
        document.querySelectorAll("[data-order-status]").forEach(function (el) {
          el.setAttribute("data-order-status", body.status);
          el.textContent = body.label;
          el.className = "badge status-" + body.badge;
        });
        if (body.key !== state.getAttribute("data-state-key")) { return reloadState(); }
        return null;
      })
      .catch(function () { /* offline for a moment: try again on the next tick */ })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  // Fetch this page again and swap in its state section (no navigation, no lost scroll).
  function reloadState() {
    return fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("order-state");
        var old = document.getElementById("order-state");
        if (fresh && old) {
          old.replaceWith(document.adoptNode(fresh));
          enhance(fresh);
        }
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    setTimeout(poll, POLL_MS);
  });
})();
