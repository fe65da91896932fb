// Plain, CSP-safe behaviour (no inline script, no eval).
// Polling elements carry data-poll: while the tab is hidden their requests are skipped,
// and they refresh at once when it becomes visible again.
(function () {
  "use strict";
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (document.hidden && elt && elt.hasAttribute && elt.hasAttribute("data-poll")) {
      evt.preventDefault();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && window.htmx) {
      document.querySelectorAll("[data-poll]").forEach(function (el) {
        window.htmx.trigger(el, "refresh");
      });
    }
  });
  // Typed confirmation: a button with data-confirm-input="ID" stays disabled until the
  // input with that id holds exactly the value in data-confirm-value.
  document.addEventListener("input", function (evt) {
    var input = evt.target;
    if (!input || !input.id) return;
    document.querySelectorAll('[data-confirm-input="' + input.id + '"]').forEach(function (btn) {
      btn.disabled = input.value.trim() !== btn.getAttribute("data-confirm-value");
    });
  });
})();
