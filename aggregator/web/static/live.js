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

  // A live blog's post: its article on this page, or a new one on top of the posts.
  function post(change) {
    var found = document.getElementById("post-" + change.entry_id);
    if (found) return found;
    var article = document.createElement("article");
    article.className = "post";
    article.id = "post-" + change.entry_id;
    var heading = document.createElement("h3");
    var link = document.createElement("a");
    link.href = change.story;
    link.textContent = change.title || "(untitled post)";  // text, never markup
    heading.appendChild(link);
    article.appendChild(heading);
    article.appendChild(document.createElement("ol")).className = "events";
    var posts = document.getElementById("posts");
    var first = posts.querySelector("article.post");
    posts.insertBefore(article, first);
    return article;
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
      if (String(change.entry_id) === main.getAttribute("data-entry")) {
        events.appendChild(node);
      } else {
        post(change).querySelector("ol.events").appendChild(node);  // a live blog's post
      }
    }
    if (node) node.classList.add("fresh");
    say("live · updated " + new Date().toLocaleTimeString());
  });
  source.addEventListener("error", function () { say("reconnecting…"); });
})();
