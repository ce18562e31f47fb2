// The loader communes paste in their pages: it inserts the widget's iframe after itself, with
// a title and geolocation allowed, and sets its height from messages that come from that very
// iframe and our origin only.
(function () {
  var script = document.currentScript;
  if (!script) return;
  var origin = new URL(script.src).origin;
  var data = script.dataset;
  var params = new URLSearchParams();
  ["territory", "theme", "typology", "q", "color", "title", "map", "lang"].forEach(function (key) {
    if (data[key]) params.set(key, data[key]);
  });
  var frame = document.createElement("iframe");
  frame.src = origin + "/embed?" + params;
  frame.title = data.title || (data.lang === "en" ? "Public services near you" : "Services publics près de chez vous");
  frame.setAttribute("allow", "geolocation");
  frame.style.cssText = "width:100%;height:480px;border:0;display:block";
  script.parentNode.insertBefore(frame, script.nextSibling);
  window.addEventListener("message", function (event) {
    var message = event.data;
    if (event.origin !== origin || event.source !== frame.contentWindow) return;
    if (!message || message.type !== "proximites:height") return;
    var height = Number(message.height);
    if (height > 0 && height < 20000) frame.style.height = Math.ceil(height) + "px";
  });
})();
