/*
 * Loaded first of the widget scripts (nb_ipywidgets_js in _config.yml), before
 * RequireJS and the ipywidgets html-manager (vendor/html-manager/embed-amd.js),
 * on the pages whose notebooks saved widget state. Two fixes for the vendored
 * scripts, found by scripts/browser_check.py:
 *
 * 1. embed-amd.js loads its Font Awesome fonts from the folder of the AMD
 *    module that asks for them ("@jupyter-widgets/html-manager/dist/..."),
 *    which RequireJS resolves against the page's own folder, where no such
 *    file exists. The RequireJS paths below point those module ids at
 *    _static/vendor/html-manager/, where the fonts are. No module is fetched
 *    from there: embed-amd.js defines them all itself.
 * 2. html-manager 1.0.x typesets widget labels with the MathJax 2 API
 *    (MathJax.Hub.Queue) whenever window.MathJax exists; the book loads
 *    MathJax 3, which has no Hub, so every widget label threw a TypeError.
 *    A minimal Hub.Queue is added to the MathJax 3 object when it appears,
 *    and typesets the element with MathJax 3's typesetPromise.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (script && script.src) {
    // this file is _static/shims/widgets-offline.js
    var vendor = new URL("../vendor/html-manager/", script.src).href;
    var paths = { "@jupyter-widgets/html-manager/dist": vendor.replace(/\/$/, "") };
    ["html-manager", "base", "base7", "controls", "controls7", "output"].forEach(function (name) {
      paths["@jupyter-widgets/" + name] = vendor + name;
    });
    if (typeof window.require === "function" && window.require.config) {
      window.require.config({ paths: paths });
    } else {
      // read by RequireJS as its configuration when it loads
      window.require = { paths: paths };
    }
  }

  function addHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && mathjax.version && !mathjax.Hub) {
      mathjax.Hub = {
        Queue: function (job) {
          var element = job && job[2];
          if (element && typeof mathjax.typesetPromise === "function") {
            mathjax.typesetPromise([element]).catch(function () {});
          }
        }
      };
    }
    return mathjax;
  }

  var current = addHub(window.MathJax);
  try {
    // MathJax 3 replaces window.MathJax (its configuration) by its own object as it loads
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: function () { return current; },
      set: function (value) { current = addHub(value); }
    });
  } catch (error) {
    /* leave MathJax alone */
  }
})();
