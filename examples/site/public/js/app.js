document.addEventListener("DOMContentLoaded", function () {
  var items = document.querySelectorAll("#assets li");
  items.forEach(function (item) { item.title = "served by proxflow-static"; });
});
