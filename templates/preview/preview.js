// Reload the preview when the server says the issue or a template changed, keeping every scroll position.
(function () {
  "use strict";
  var version = Number(document.body.dataset.version);
  var status = document.getElementById("live-status");
  var SCROLL_KEY = "distributor-preview-scroll";
  var RETRY_MS = 2000;

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label;
  }

  function frames() {
    return Array.prototype.slice.call(document.querySelectorAll("iframe.frame, pre.plain-text"));
  }

  function scrollOf(element) {
    if (element.tagName === "IFRAME") {
      var view = element.contentWindow;
      return view ? view.scrollY : 0;
    }
    return element.scrollTop;
  }

  function saveScroll() {
    var positions = { page: window.scrollY, parts: {} };
    frames().forEach(function (element) {
      try { positions.parts[element.id] = scrollOf(element); } catch (error) { /* frame not readable */ }
    });
    sessionStorage.setItem(SCROLL_KEY, JSON.stringify(positions));
  }

  function restoreScroll() {
    var saved = sessionStorage.getItem(SCROLL_KEY);
    if (!saved) return;
    sessionStorage.removeItem(SCROLL_KEY);
    var positions = JSON.parse(saved);
    window.scrollTo(0, positions.page || 0);
    frames().forEach(function (element) {
      var top = positions.parts[element.id] || 0;
      if (element.tagName !== "IFRAME") { element.scrollTop = top; return; }
      var apply = function () { element.contentWindow.scrollTo(0, top); };
      var loaded = element.contentDocument && element.contentDocument.readyState === "complete" &&
                   element.contentDocument.URL !== "about:blank";
      if (loaded) apply(); else element.addEventListener("load", apply, { once: true });
    });
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function watch() {
    for (;;) {
      try {
        var reply = await fetch("/version?since=" + version, { cache: "no-store" });
        var state = await reply.json();
        if (state.version !== version) {
          setStatus("connecting", "reloading…");
          saveScroll();
          location.reload();
          return;
        }
        setStatus("live", "live");
      } catch (error) {
        setStatus("offline", "server stopped? retrying");
        await sleep(RETRY_MS);
      }
    }
  }

  // The browser's own restoration keeps the element that was on top in view, which hides a new
  // error banner above it; the saved offsets put the page back where it was instead.
  history.scrollRestoration = "manual";
  restoreScroll();
  setStatus("live", "live");
  watch();
})();
