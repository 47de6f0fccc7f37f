// Filters the failure tables. Reads only the page's own DOM (row text and data-*
// attributes); the initial query may come from the URL: report.html#q=word
(function () {
  "use strict";
  function initialQuery() {
    var m = /(?:^#|&)q=([^&]*)/.exec(window.location.hash || "");
    if (!m) return "";
    try { return decodeURIComponent(m[1].replace(/\+/g, " ")); } catch (e) { return ""; }
  }
  function apply(box) {
    var input = box.querySelector("input[type=search]");
    var iter = box.querySelector("select.iteration");
    var q = (input ? input.value : "").trim().toLowerCase();
    var it = iter ? iter.value : "";
    var rows = box.querySelectorAll("tbody tr[data-iteration]");
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = (!it || row.getAttribute("data-iteration") === it) &&
               (!q || row.textContent.toLowerCase().indexOf(q) !== -1);
      row.hidden = !ok;
      if (ok) shown++;
    }
    var count = box.querySelector(".shown");
    if (count) count.textContent = String(shown);
    box.setAttribute("data-shown", String(shown));
  }
  var q0 = initialQuery();
  var boxes = document.querySelectorAll(".failures");
  for (var i = 0; i < boxes.length; i++) {
    (function (box) {
      var input = box.querySelector("input[type=search]");
      var iter = box.querySelector("select.iteration");
      if (input) { if (q0) input.value = q0; input.addEventListener("input", function () { apply(box); }); }
      if (iter) iter.addEventListener("change", function () { apply(box); });
      apply(box);
    })(boxes[i]);
  }
  document.documentElement.setAttribute("data-filters-ready", "1");
})();
