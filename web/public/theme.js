// Sets data-theme on <html> before the app's CSS paints, so no wrong-theme flash.
(function () {
  var t = "system";
  try { t = localStorage.getItem("mainloop.theme") || "system"; } catch (e) {}
  if (t !== "light" && t !== "dark" && t !== "terminal") {
    t = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  document.documentElement.setAttribute("data-theme", t);
})();
