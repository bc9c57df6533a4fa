// aggregator serve: live updates. The page is complete without this script; it only adds
// changes the server announces (Server-Sent Events) while the page is open. The HTML it
// inserts was rendered and escaped by the server, exactly like the rest of the page.
"use strict";
(function () {
  var main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  var list = document.getElementById("changes");
  var events = document.getElementById("events");
  if (list && list.getAttribute("data-newest") !== "True") return; // an older page: no live rows
  var status = document.getElementById("live-status");
  var source = new EventSource(main.getAttribute("data-live"));

  function say(text) { if (status) status.textContent = text; }

  function fragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    return template.content.firstElementChild;
  }

  source.addEventListener("hello", function () { say("live"); });
  source.addEventListener("change", function (message) {
    var change = JSON.parse(message.data);
    if (document.getElementById("c" + change.id)) return; // already shown
    var node;
    if (list) {
      node = fragment(change.row);
      var empty = list.querySelector("li.empty");
      if (empty) empty.remove();
      list.insertBefore(node, list.firstChild);
    } else if (events) {
      node = fragment(change.event);
      events.appendChild(node);
    }
    if (node) node.classList.add("fresh");
    say("live · updated " + new Date().toLocaleTimeString());
  });
  source.addEventListener("error", function () { say("reconnecting…"); });
})();
