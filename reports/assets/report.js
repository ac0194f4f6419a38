/* aichaos report: draws the charts from the embedded JSON and links the timelines' zoom. */
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Plotly === "undefined") {
    return;
  }
  var figures = JSON.parse(source.textContent).figures;
  var config = {
    displaylogo: false,
    responsive: true,
    scrollZoom: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"]
  };
  var timelines = [];
  var syncing = false;

  function onRelayout(div) {
    return function (event) {
      if (syncing) {
        return;
      }
      var update = null;
      if (event["xaxis.range[0]"] !== undefined) {
        update = {"xaxis.range": [event["xaxis.range[0]"], event["xaxis.range[1]"]]};
      } else if (event["xaxis.range"] !== undefined) {
        update = {"xaxis.range": event["xaxis.range"]};
      } else if (event["xaxis.autorange"]) {
        update = {"xaxis.range": div.dataset.fullRange.split(",").map(Number)};
      }
      if (!update) {
        return;
      }
      relayoutAll(timelines.filter(function (other) { return other !== div; }), update);
    };
  }

  // relayout several charts without their own relayout events echoing back to the others
  function relayoutAll(divs, update) {
    syncing = true;
    var pending = divs.map(function (div) { return Plotly.relayout(div, update); });
    Promise.all(pending).then(function () { syncing = false; },
                              function () { syncing = false; });
  }

  Object.keys(figures).forEach(function (id) {
    var div = document.getElementById("chart-" + id);
    if (!div) {
      return;
    }
    var figure = figures[id];
    Plotly.newPlot(div, figure.data, figure.layout, config).then(function () {
      div.dataset.drawn = "1";
    });
    if (figure.timeline && figure.layout.xaxis && figure.layout.xaxis.range) {
      div.dataset.fullRange = figure.layout.xaxis.range.join(",");
      timelines.push(div);
      div.on("plotly_relayout", onRelayout(div));
    }
  });

  // "zoom to" buttons beside each fault window: the timelines show that window with a margin
  Array.prototype.forEach.call(document.querySelectorAll("[data-zoom]"), function (button) {
    button.addEventListener("click", function () {
      var span = button.getAttribute("data-zoom").split(",").map(Number);
      var pad = Math.max(5, (span[1] - span[0]) * 0.5);
      var range = [Math.max(0, span[0] - pad), span[1] + pad];
      relayoutAll(timelines, {"xaxis.range": range});
      document.getElementById("timeline").scrollIntoView();
    });
  });

  var reset = document.getElementById("reset-zoom");
  if (reset) {
    reset.addEventListener("click", function () {
      if (timelines.length) {
        relayoutAll(timelines, {"xaxis.range": timelines[0].dataset.fullRange.split(",").map(Number)});
      }
    });
  }
}());
