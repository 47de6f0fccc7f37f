// The labelling page. Prompt text is only ever set with textContent: a prompt that
// holds markup or script is shown as text. Every label is POSTed and committed at
// once; the page always shows the first unlabelled item of what the server sends.
"use strict";
(function () {
  var state = null;
  var current = null;
  var queue = Promise.resolve();  // one request at a time; keys pressed meanwhile wait their turn
  var refreshTimer = null;
  var $ = function (id) { return document.getElementById(id); };

  function api(method, path, body) {
    var opts = { method: method, cache: "no-store", headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); }
        return j;
      });
    });
  }

  function say(text, isError) {
    var m = $("message");
    m.textContent = text || "";
    m.className = isError ? "error" : "";
  }

  function render(s) {
    state = s;
    current = null;
    var index = -1;
    for (var k = 0; k < s.items.length; k++) {
      if (s.items[k].label === null) { current = s.items[k]; index = k; break; }
    }
    $("progress").textContent = s.done + " of " + s.total + " labelled";
    $("bar").max = Math.max(s.total, 1);
    $("bar").value = s.done;
    document.body.dataset.done = String(s.done);
    document.body.dataset.total = String(s.total);
    document.body.dataset.current = current ? current.id : "";
    $("undo").disabled = s.done === 0;
    if (!current) {
      $("card").hidden = true;
      say(s.total ? "All " + s.total + " prompts are labelled." : "Nothing is waiting for labels.");
      scheduleRefresh();
      return;
    }
    clearTimeout(refreshTimer);
    $("card").hidden = false;
    $("position").textContent = "prompt " + (index + 1) + " of " + s.total;
    $("round").textContent = current.round === null ? "" : "(round " + current.round + ")";
    $("text").textContent = current.text;
    $("guess-line").hidden = current.guess === null;
    $("guess").textContent = current.guess === null ? "" : current.guess;
    var box = $("choices");
    box.replaceChildren();
    current.choices.forEach(function (choice, i) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = (i + 1) + "  " + choice;
      b.dataset.choice = choice;
      if (choice === current.guess) { b.className = "guess"; }
      b.addEventListener("click", function () { giveIndex(i); });
      box.appendChild(b);
    });
    say("");
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(load, 3000);
  }

  function failed(err) {
    var done = state && state.total && state.done === state.total;
    say((done ? "All prompts are labelled; " : "") + "the labelling server did not answer (" + err.message + ").", !done);
  }

  // ``make`` runs when the previous request has finished, so it sees the item then shown.
  function send(make) {
    queue = queue.then(function () {
      var req = make();
      return req ? api("POST", req.path, req.body).then(render, failed) : null;
    });
  }

  function giveIndex(i) {
    send(function () {
      if (!current || i >= current.choices.length) { return null; }
      return { path: "api/label", body: { id: current.id, label: current.choices[i] } };
    });
  }

  function undo() {
    send(function () { return state && state.done > 0 ? { path: "api/undo", body: {} } : null; });
  }

  function load() {
    api("GET", "api/state").then(render, failed).then(function () { document.body.dataset.ready = "1"; });
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) { return; }
    if (e.key >= "1" && e.key <= "9") {
      var i = Number(e.key) - 1;
      e.preventDefault();
      giveIndex(i);
    } else if (e.key === "u" || e.key === "U") {
      e.preventDefault();
      undo();
    }
  });
  $("undo").addEventListener("click", undo);
  load();
})();
