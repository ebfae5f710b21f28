// churnwatch inbox: live updates over server-sent events. The page works
// without this script (read-only views and plain form posts); with it, the
// alert list updates itself and the banner says whether it is live.
//
// An update patches the list row by row: a row somebody is working in (a
// field focused or changed from what the page gave it) keeps its forms as
// they are, and only its other cells are brought up to date. Its forms
// still carry the revision they were shown with, so an action decided on
// an alert that changed meanwhile is refused (409), never applied blindly.
(function () {
  "use strict";
  var banner = document.getElementById("live");
  var region = document.getElementById("live-region");
  if (!banner || !region || !window.EventSource) { return; }

  function edited(row) {
    if (row.contains(document.activeElement)) { return true; }
    var fields = row.querySelectorAll("input:not([type=hidden]), select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.tagName === "SELECT") {
        for (var j = 0; j < f.options.length; j++) {
          if (f.options[j].selected !== f.options[j].defaultSelected) { return true; }
        }
      } else if (f.value !== f.defaultValue) {
        return true;
      }
    }
    return false;
  }

  // `row` with every cell but its actions taken from `fresh`.
  function refreshCells(row, fresh) {
    for (var i = 0; i < fresh.cells.length && i < row.cells.length; i++) {
      if (!row.cells[i].classList.contains("actions")) {
        row.replaceChild(fresh.cells[i].cloneNode(true), row.cells[i]);
      }
    }
    row.setAttribute("data-state", fresh.getAttribute("data-state") || "");
    return row;
  }

  function patch(html) {
    var next = document.createElement("div");
    next.innerHTML = html;
    var body = region.querySelector("tbody");
    var fresh = next.querySelector("tbody");
    if (!body || !fresh) { region.innerHTML = html; return; }
    var kept = {};
    Array.prototype.forEach.call(body.rows, function (r) {
      if (r.id && edited(r)) { kept[r.id] = r; }
    });
    var rows = [];
    Array.prototype.forEach.call(fresh.rows, function (r) {
      var old = r.id && kept[r.id];
      if (old) { delete kept[r.id]; rows.push(refreshCells(old, r)); } else { rows.push(r); }
    });
    // A row being worked in stays even when its alert left this view; the
    // action then says what became of it.
    Object.keys(kept).forEach(function (id) { rows.push(kept[id]); });
    // "No alerts match" only when no row is left at all.
    var shown = rows.length > 1 ? rows.filter(function (r) { return r.id; }) : rows;
    body.replaceChildren.apply(body, shown);
    ["counts", "paging"].forEach(function (cls) {
      var now = region.querySelector("." + cls);
      var then = next.querySelector("." + cls);
      if (now && then) { now.replaceWith(then); } else if (now) { now.remove(); } else if (then) {
        region.appendChild(then);
      }
    });
  }

  var waiting = false;
  function refresh() {
    if (waiting) { return; }
    waiting = true;
    setTimeout(function () {
      waiting = false;
      fetch("/ui/rows" + window.location.search, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { patch(html); } })
        .catch(function () {});
    }, 150);
  }
  function say(text, ok) {
    banner.textContent = text;
    banner.className = ok ? "live ok" : "live bad";
  }
  var stream = new EventSource("/api/v1/stream");
  stream.onopen = function () { say("Live: new alerts appear as they fire", true); refresh(); };
  stream.onerror = function () { say("Live connection lost, reconnecting…", false); };
  ["firing", "resolved", "lifecycle", "reopened", "lagged"].forEach(function (kind) {
    stream.addEventListener(kind, refresh);
  });
}());
