// Applies the saved theme before the first paint (a classic script: no flash of the wrong theme).
(function () {
  var t = null;
  try { t = localStorage.getItem("xj.theme"); } catch (e) { /* storage may be blocked */ }
  document.documentElement.dataset.theme = t === "dark" || t === "light" ? t : "auto";
})();
