// The cancel / terminate confirmation (templates/locks/_confirm.html, swapped into
// #backend-action by the Locks and Activity pages). CSP-safe.
// - When it opens it is scrolled fully into view below the sticky top bar, and focus
//   moves into it: the typed-confirmation input, else its first button.
// - Escape (or its Close button) closes it and gives focus back to the button that
//   opened it (found again by its hx-get when a refresh has replaced it).
// - The top bar's height is kept in --topbar-h, for CSS scroll-margin-top (anchors such
//   as /activity#sessions land below the bar too).
(function () {
  "use strict";
  if (window.__confirmFocus) return; // loaded once per document
  window.__confirmFocus = true;
  var AREA = "backend-action";
  var opener = null; // {elt, url}

  function topbar() {
    var bar = document.querySelector(".topbar");
    if (!bar) return 0;
    var pos = window.getComputedStyle(bar).position;
    return pos === "sticky" || pos === "fixed" ? bar.getBoundingClientRect().height : 0;
  }

  function syncTopbar() {
    document.documentElement.style.setProperty("--topbar-h", Math.ceil(topbar()) + "px");
  }

  function reveal(box) {
    var gap = 8;
    var rect = box.getBoundingClientRect();
    var top = topbar() + gap;
    var room = window.innerHeight - top - gap;
    var delta = 0;
    if (rect.top < top || rect.height > room) {
      delta = rect.top - top; // its top just below the bar
    } else if (rect.bottom > window.innerHeight - gap) {
      delta = rect.bottom - (window.innerHeight - gap); // its bottom in view
    }
    if (delta) window.scrollBy({ top: delta, left: 0, behavior: "instant" });
  }

  function focusInside(box) {
    var input = box.querySelector("input[name=confirm]");
    var target = input || box.querySelector("button:not([disabled]), a[href]");
    if (target) target.focus({ preventScroll: true });
  }

  // The nearest ancestor with an id (a root card, a list): where to look for a button
  // again once a refresh has replaced it.
  function scopeOf(elt) {
    var p = elt.parentElement ? elt.parentElement.closest("[id]") : null;
    return p ? p.id : "";
  }

  function findByUrl(url, scope) {
    var places = [];
    var home = scope ? document.getElementById(scope) : null;
    if (home) places.push(home);
    places.push(document);
    for (var j = 0; j < places.length; j++) {
      var all = places[j].querySelectorAll("[hx-get]");
      for (var i = 0; i < all.length; i++) {
        if (all[i].getAttribute("hx-get") === url) return all[i];
      }
    }
    return null;
  }

  function findOpener() {
    if (!opener) return null;
    if (opener.elt && opener.elt.isConnected) return opener.elt;
    return findByUrl(opener.url, opener.scope);
  }

  function restoreFocus() {
    var elt = findOpener();
    opener = null;
    if (elt) elt.focus({ preventScroll: false });
  }

  function settled(area) {
    var box = area.querySelector("#backend-confirm");
    if (box) {
      reveal(box);
      focusInside(box);
      return;
    }
    var result = area.querySelector(".locks-result");
    if (result) {
      reveal(result);
      var btn = result.querySelector("button");
      if (btn) btn.focus({ preventScroll: true });
      return;
    }
    if (!area.children.length) restoreFocus(); // closed or dismissed
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    var target = evt.detail && evt.detail.target;
    if (!elt || !target || target.id !== AREA || !elt.getAttribute) return;
    var url = elt.getAttribute("hx-get") || "";
    if (url.indexOf("/confirm?") !== -1) opener = { elt: elt, url: url, scope: scopeOf(elt) };
  });

  // A polled panel is replaced every few seconds: a focused cancel / terminate button in
  // it keeps the focus (htmx itself only restores focus to elements with an id).
  var kept = null;
  document.addEventListener("htmx:beforeSwap", function (evt) {
    kept = null;
    var a = document.activeElement;
    var target = evt.detail && evt.detail.target;
    if (!a || a === document.body || a.id || !target || !target.contains(a)) return;
    var url = a.getAttribute && a.getAttribute("hx-get");
    if (url && url.indexOf("/confirm?") !== -1) kept = { url: url, scope: scopeOf(a) };
  });
  document.addEventListener("htmx:afterSwap", function () {
    var k = kept;
    kept = null;
    if (!k) return;
    var a = document.activeElement;
    if (a && a !== document.body && a.isConnected) return;
    var elt = findByUrl(k.url, k.scope);
    if (elt) elt.focus({ preventScroll: true });
  });

  document.addEventListener("htmx:afterSettle", function (evt) {
    var target = evt.detail && evt.detail.target;
    if (!target || target.id !== AREA || evt.target !== target) return;
    // After htmx's own "show:" scrolling, which runs right after this event.
    window.requestAnimationFrame(function () { settled(target); });
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape") return;
    var area = document.getElementById(AREA);
    if (!area || !area.children.length) return;
    var active = document.activeElement;
    if (active && active !== document.body && !area.contains(active)) return;
    evt.preventDefault();
    area.replaceChildren();
    restoreFocus();
  });

  syncTopbar();
  window.addEventListener("resize", syncTopbar);
  if (window.ResizeObserver) {
    var bar = document.querySelector(".topbar");
    if (bar) new window.ResizeObserver(syncTopbar).observe(bar);
  }
})();
