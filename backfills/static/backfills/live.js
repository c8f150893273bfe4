// Live figures for the backfills admin: every element with data-bf-live-url polls that url
// (JSON) every data-bf-refresh seconds and updates its [data-bf-field] elements in place.
// A run page reloads once its run changes state, so its buttons match the new state.
(function () {
  "use strict";

  function setField(element, value) {
    if (element.tagName === "PROGRESS") {
      if (value === null || value === undefined) {
        element.removeAttribute("value");
      } else {
        element.value = value;
      }
    } else {
      element.textContent = value === null || value === undefined || value === "" ? "-" : value;
    }
  }

  function fill(scope, figures) {
    scope.querySelectorAll("[data-bf-field]").forEach(function (element) {
      var name = element.getAttribute("data-bf-field");
      if (name in figures) {
        setField(element, figures[name]);
      }
    });
  }

  function updateRun(root, data) {
    fill(root, data.run);
    Object.keys(data.charts || {}).forEach(function (name) {
      var figure = root.querySelector('[data-bf-chart="' + name + '"]');
      if (figure) {
        figure.innerHTML = data.charts[name];
      }
    });
    if (data.run.state !== root.getAttribute("data-bf-state")) {
      window.location.reload();
      return false;
    }
    return true;
  }

  function updateOverview(root, data) {
    (data.backfills || []).forEach(function (backfill) {
      var row = root.querySelector('tr[data-backfill="' + CSS.escape(backfill.name) + '"]');
      if (!row) {
        return;
      }
      var figures = Object.assign({state: backfill.state}, backfill.run || {});
      fill(row, figures);
    });
    return true;
  }

  function poll(root) {
    var url = root.getAttribute("data-bf-live-url");
    var seconds = parseFloat(root.getAttribute("data-bf-refresh") || "2");
    var update = root.id === "bf-run" ? updateRun : updateOverview;
    function tick() {
      fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"})
        .then(function (response) {
          if (!response.ok) {
            throw new Error(response.status);
          }
          return response.json();
        })
        .then(function (data) {
          if (update(root, data) !== false) {
            window.setTimeout(tick, seconds * 1000);
          }
        })
        .catch(function () {
          window.setTimeout(tick, seconds * 4000);  // the server may be restarting
        });
    }
    window.setTimeout(tick, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-bf-live-url]").forEach(poll);
  });
})();
