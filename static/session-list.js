// The Activity page's session list (templates/activity/_sessions.html). CSP-safe.
// - A column header is a plain link (?sort=...&dir=...#sessions) that works without
//   JavaScript; here it sets the filter form's sort and order and submits it, so htmx
//   swaps the panel and the refreshes that follow keep that order.
// - The panel is refreshed every few seconds: a query the reader expanded stays expanded.
// - Back / Forward between filtered addresses show the filter in the form too.
(function () {
  "use strict";
  if (window.__sessionList) return; // loaded once per document
  window.__sessionList = true;
  var open = Object.create(null); // data-key of each expanded query

  document.addEventListener("click", function (evt) {
    var link = evt.target && evt.target.closest ? evt.target.closest("#sessions a[data-sort]") : null;
    if (!link || !window.htmx || evt.defaultPrevented || evt.button !== 0) return;
    if (evt.ctrlKey || evt.metaKey || evt.shiftKey || evt.altKey) return; // new tab: the link
    var form = document.getElementById("session-filters");
    if (!form || !form.elements.sort || !form.elements.dir) return;
    evt.preventDefault();
    form.elements.sort.value = link.getAttribute("data-sort");
    form.elements.dir.value = link.getAttribute("data-dir");
    if (form.requestSubmit) form.requestSubmit();
    else window.htmx.trigger(form, "submit");
  });

  // "toggle" does not bubble: listen in the capture phase.
  document.addEventListener("toggle", function (evt) {
    var d = evt.target;
    if (!d || !d.matches || !d.matches("details.act-query[data-key]")) return;
    var key = d.getAttribute("data-key");
    if (d.open) open[key] = true;
    else delete open[key];
  }, true);

  // Back / Forward to a filtered address: htmx reloads the page's body from the server
  // but keeps the (hx-preserve) form as it was; show the filter the list now applies.
  document.addEventListener("htmx:historyRestore", function () {
    var form = document.getElementById("session-filters");
    var list = document.getElementById("sessions");
    if (!form || !list) return;
    var d = list.dataset;
    var set = function (name, value) { if (form.elements[name]) form.elements[name].value = value; };
    set("state", d.stateFilter || "");
    set("q", d.q || "");
    set("sort", d.sort || "xact_age");
    set("dir", d.dir || "desc");
  });

  document.addEventListener("htmx:afterSwap", function (evt) {
    var target = evt.detail && evt.detail.target;
    if (!target || target.id !== "activity-panel") return;
    target.querySelectorAll("details.act-query[data-key]").forEach(function (d) {
      if (open[d.getAttribute("data-key")]) d.open = true;
    });
  });
})();
