// clipbench leaderboard: sortable columns and filters, vanilla JS, no dependencies.
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var td = row.children[index];
    var raw = td ? td.getAttribute("data-sort") : "";
    if (raw === null || raw === "") return null;
    if (numeric) {
      var n = parseFloat(raw);
      return isNaN(n) ? null : n;
    }
    return raw.toLowerCase();
  }

  function sortBy(th) {
    var table = th.closest("table");
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var numeric = th.getAttribute("data-numeric") === "1";
    var current = th.getAttribute("aria-sort");
    var ascending;
    if (current === "ascending") ascending = false;
    else if (current === "descending") ascending = true;
    else ascending = th.getAttribute("data-better") !== "higher"; // first click: best first
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows).map(function (row, i) {
      return { row: row, value: cellValue(row, index, numeric), i: i };
    });
    rows.sort(function (a, b) {
      if (a.value === null && b.value === null) return a.i - b.i;
      if (a.value === null) return 1; // missing values last, whatever the direction
      if (b.value === null) return -1;
      if (a.value < b.value) return ascending ? -1 : 1;
      if (a.value > b.value) return ascending ? 1 : -1;
      return a.i - b.i;
    });
    rows.forEach(function (r) { tbody.appendChild(r.row); });
    table.classList.add("resorted"); // rows no longer follow the family groups: drop their separators
  }

  document.querySelectorAll("table.sortable th[data-key]").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });

  var selects = document.querySelectorAll("select[data-filter]");

  function applyFilters() {
    var want = {};
    selects.forEach(function (s) { want[s.getAttribute("data-filter")] = s.value; });
    document.querySelectorAll("tr[data-origin], details[data-origin]").forEach(function (el) {
      var show = Object.keys(want).every(function (key) {
        if (!want[key]) return true;
        var have = el.getAttribute("data-" + key);
        return have === null || have === want[key];
      });
      el.hidden = !show;
    });
    document.querySelectorAll("section.suite").forEach(function (suite) {
      var scopes = suite.querySelectorAll("div.scope[data-scope]");
      var target = want.family || "all";
      var found = Array.prototype.some.call(scopes, function (d) { return d.getAttribute("data-scope") === target; });
      scopes.forEach(function (d) {
        d.hidden = d.getAttribute("data-scope") !== (found ? target : "all");
      });
    });
  }

  selects.forEach(function (s) { s.addEventListener("change", applyFilters); });
  applyFilters();
})();
