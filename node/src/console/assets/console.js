// Haven console: live updates. Every page works without this file; with it, a region marked
// `data-live="URL"` is fetched again (through htmx) whenever the node reports that something
// arrived. The event stream carries metadata only, never field values.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  if (!regions.length || !window.EventSource || !window.htmx) {
    return;
  }
  var events = new EventSource(document.body.getAttribute("data-events") || "/events");
  var refresh = function () {
    regions.forEach(function (region) {
      window.htmx.ajax("GET", region.getAttribute("data-live"), { target: region, swap: "innerHTML" });
    });
  };
  // Whatever arrived between the page being rendered and the stream opening (or while a dropped
  // stream reconnected) is fetched once the stream is open.
  events.addEventListener("open", function () {
    refresh();
    document.body.setAttribute("data-events-open", "");
  });
  events.addEventListener("arrival", refresh);
  events.addEventListener("ended", function () {
    events.close();
    window.location.assign("/sign-in");
  });
})();
