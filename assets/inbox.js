// churnwatch inbox: live updates over server-sent events. The page works
// without this script (read-only views and plain form posts); with it, the
// alert list refreshes itself and the banner says whether it is live.
(function () {
  "use strict";
  var banner = document.getElementById("live");
  var region = document.getElementById("live-region");
  if (!banner || !region || !window.EventSource) { return; }
  var waiting = false;
  function refresh() {
    if (waiting) { return; }
    waiting = true;
    setTimeout(function () {
      waiting = false;
      fetch("/ui/rows" + window.location.search, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } })
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
