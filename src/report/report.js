// Draws the report's charts from the embedded data and sorts its table. Strings from runs only
// ever reach the page as text (textContent, setAttribute), never as markup. Errors are shown
// on the page, so a broken chart is seen rather than silently missing.
(function () {
  'use strict';

  var errors = document.getElementById('errors');
  function fail(text) {
    errors.textContent += text + '\n';
  }
  window.onerror = function (message, source, line, column, error) {
    fail(error && error.stack ? String(error.stack) : message + ' (line ' + line + ')');
  };

  var data = JSON.parse(document.getElementById('report-data').textContent);
  var plots = Array.prototype.slice.call(document.querySelectorAll('svg.plot'));
  // SVG elements need the SVG namespace; the frames the page came with carry it.
  var NS = plots.length ? plots[0].namespaceURI : null;
  var W = 640, H = 300, M = { l: 62, r: 14, t: 12, b: 30 };
  var state = { log: false, smoothing: 0, hidden: {} };

  function svg(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function node(name, className, text, parent) {
    var e = document.createElement(name);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function color(i) {
    return 'hsl(' + ((i * 137.508) % 360).toFixed(1) + ',65%,' + (i % 2 ? 36 : 46) + '%)';
  }

  // A number in a few characters, as an axis or a tooltip shows it.
  function fmt(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }

  // TensorBoard's smoothing: an exponential moving average corrected for its zero start.
  function smooth(ys, weight) {
    if (!weight) return ys;
    var out = new Array(ys.length), last = 0, debias = 1;
    for (var i = 0; i < ys.length; i++) {
      last = last * weight + (1 - weight) * ys[i];
      debias *= weight;
      out[i] = last / (1 - debias);
    }
    return out;
  }

  function niceTicks(lo, hi, count) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    if (err >= 7.5) step *= 10;
    else if (err >= 3.5) step *= 5;
    else if (err >= 1.5) step *= 2;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return out;
  }

  // One chart of a metric for every run: a path per run, axes, and the nearest point on hover.
  function Chart(frame, metric) {
    this.frame = frame;
    this.metric = metric;
    frame.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    this.axes = svg('g', { class: 'axes' }, frame);
    var plot = svg('g', { class: 'lines' }, frame);
    this.paths = data.runs.map(function (run, i) {
      if (!run.curves[metric]) return null;
      // A pruned run's curve is faded; it ends where the run stopped.
      var cls = run.status === 'pruned' ? 'curve pruned' : 'curve';
      return svg('path', { class: cls, stroke: color(i) }, plot);
    });
    this.marker = svg('circle', { class: 'marker', r: '4' }, frame);
    this.tip = node('div', 'tip', undefined, frame.parentNode);
    this.shown = [];
    var self = this;
    frame.addEventListener('mousemove', function (ev) {
      self.hover(ev);
    });
    frame.addEventListener('mouseleave', function () {
      self.unhover();
    });
  }

  Chart.prototype.draw = function () {
    var metric = this.metric, lo = Infinity, hi = -Infinity, x0 = Infinity, x1 = -Infinity;
    var series = data.runs.map(function (run, i) {
      var c = run.curves[metric];
      if (!c || state.hidden[i]) return null;
      var values = smooth(c.y, state.smoothing), xs = c.x, ys = values;
      if (state.log) {
        xs = []; ys = [];
        var kept = [];
        for (var j = 0; j < values.length; j++) {
          if (values[j] > 0) {
            xs.push(c.x[j]); ys.push(Math.log10(values[j])); kept.push(values[j]);
          }
        }
        values = kept;
      }
      for (var k = 0; k < ys.length; k++) {
        if (ys[k] < lo) lo = ys[k];
        if (ys[k] > hi) hi = ys[k];
      }
      if (xs.length) {
        if (xs[0] < x0) x0 = xs[0];
        if (xs[xs.length - 1] > x1) x1 = xs[xs.length - 1];
      }
      return { x: xs, y: ys, values: values };
    });
    this.clearAxes();
    if (!(hi >= lo)) {
      this.paths.forEach(function (p) { if (p) p.setAttribute('d', ''); });
      this.shown = [];
      svg('text', { x: String(W / 2), y: String(H / 2), class: 'empty' }, this.axes).textContent =
        state.log ? 'no positive values' : 'no runs shown';
      return;
    }
    if (hi === lo) {
      var pad = Math.abs(hi) * 0.1 || 1;
      lo -= pad; hi += pad;
    } else {
      var margin = (hi - lo) * 0.04;
      lo -= margin; hi += margin;
    }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var sx = (W - M.l - M.r) / (x1 - x0), sy = (H - M.t - M.b) / (hi - lo);
    this.shown = series.map(function (s, i) {
      var path = this.paths[i];
      if (!path) return null;
      if (!s || !s.x.length) {
        path.setAttribute('d', '');
        return null;
      }
      var n = s.x.length, px = new Float64Array(n), py = new Float64Array(n), parts = new Array(n);
      for (var j = 0; j < n; j++) {
        px[j] = M.l + (s.x[j] - x0) * sx;
        py[j] = H - M.b - (s.y[j] - lo) * sy;
        parts[j] = (j ? 'L' : 'M') + px[j].toFixed(1) + ' ' + py[j].toFixed(1);
      }
      path.setAttribute('d', n === 1 ? parts[0] + 'h0.1' : parts.join(''));
      return { px: px, py: py, steps: s.x, values: s.values };
    }, this);
    this.drawAxes(x0, x1, lo, hi, sx, sy);
  };

  Chart.prototype.clearAxes = function () {
    while (this.axes.firstChild) this.axes.removeChild(this.axes.firstChild);
  };

  Chart.prototype.drawAxes = function (x0, x1, lo, hi, sx, sy) {
    var axes = this.axes, bottom = H - M.b;
    niceTicks(x0, x1, 6).forEach(function (t) {
      var x = M.l + (t - x0) * sx;
      svg('line', { class: 'grid', x1: x, x2: x, y1: M.t, y2: bottom }, axes);
      svg('text', { class: 'tick', x: x, y: bottom + 18, 'text-anchor': 'middle' }, axes)
        .textContent = fmt(t);
    });
    var ys = niceTicks(lo, hi, 5);
    if (state.log && hi - lo >= 1) {
      ys = [];
      for (var e = Math.ceil(lo); e <= Math.floor(hi); e++) ys.push(e);
    }
    ys.forEach(function (t) {
      var y = bottom - (t - lo) * sy;
      svg('line', { class: 'grid', x1: M.l, x2: W - M.r, y1: y, y2: y }, axes);
      svg('text', { class: 'tick', x: M.l - 6, y: y + 4, 'text-anchor': 'end' }, axes)
        .textContent = fmt(state.log ? Math.pow(10, t) : t);
    });
    svg('line', { class: 'axis', x1: M.l, x2: W - M.r, y1: bottom, y2: bottom }, axes);
    svg('line', { class: 'axis', x1: M.l, x2: M.l, y1: M.t, y2: bottom }, axes);
    svg('text', { class: 'label', x: 4, y: bottom + 18 }, axes)
      .textContent = 'step';
  };

  // The point nearest the pointer, over every run shown.
  Chart.prototype.hover = function (ev) {
    var box = this.frame.getBoundingClientRect();
    var mx = (ev.clientX - box.left) * W / box.width, my = (ev.clientY - box.top) * H / box.height;
    var best = null, bestD = Infinity;
    for (var i = 0; i < this.shown.length; i++) {
      var s = this.shown[i];
      if (!s) continue;
      var a = 0, b = s.px.length - 1;
      while (a < b) {
        var mid = (a + b) >> 1;
        if (s.px[mid] < mx) a = mid + 1; else b = mid;
      }
      for (var j = Math.max(0, a - 1); j <= Math.min(s.px.length - 1, a); j++) {
        var dx = s.px[j] - mx, dy = s.py[j] - my, d = dx * dx + dy * dy;
        if (d < bestD) { bestD = d; best = { run: i, j: j }; }
      }
    }
    if (!best) return this.unhover();
    var hit = this.shown[best.run];
    this.marker.setAttribute('cx', hit.px[best.j]);
    this.marker.setAttribute('cy', hit.py[best.j]);
    this.marker.setAttribute('fill', color(best.run));
    this.marker.style.display = 'block';
    this.tip.textContent = data.runs[best.run].label + '\nstep ' + hit.steps[best.j] + '\n' +
      this.metric + ' ' + fmt(hit.values[best.j]) + (state.smoothing ? ' (smoothed)' : '');
    this.tip.style.display = 'block';
    var left = hit.px[best.j] * box.width / W, top = hit.py[best.j] * box.height / H;
    this.tip.style.left = Math.min(left + 12, box.width - this.tip.offsetWidth - 4) + 'px';
    this.tip.style.top = Math.max(top - this.tip.offsetHeight - 8, 0) + 'px';
    focus(best.run);
  };

  Chart.prototype.unhover = function () {
    this.marker.style.display = 'none';
    this.tip.style.display = 'none';
    focus(null);
  };

  var charts = plots.map(function (frame) {
    return new Chart(frame, frame.getAttribute('data-metric'));
  });
  var focused = null;

  // Brings one run forward in every chart (null: none).
  function focus(run) {
    if (run === focused) return;
    charts.forEach(function (c) {
      if (focused !== null && c.paths[focused]) c.paths[focused].classList.remove('hot');
      if (run !== null && c.paths[run]) c.paths[run].classList.add('hot');
      c.frame.classList.toggle('focus', run !== null);
    });
    focused = run;
  }

  function drawAll() {
    charts.forEach(function (c) { c.draw(); });
  }

  function legend() {
    var box = document.getElementById('legend');
    if (!box) return;
    var entries = data.runs.map(function (run, i) {
      var entry = node('button', 'entry status-' + run.status.replace(/[^a-z]/g, ''), undefined, box);
      entry.type = 'button';
      var swatch = node('span', 'swatch', undefined, entry);
      swatch.style.background = color(i);
      node('span', 'name', run.label, entry);
      entry.addEventListener('click', function () {
        state.hidden[i] = !state.hidden[i];
        entry.classList.toggle('off', !!state.hidden[i]);
        drawAll();
      });
      entry.addEventListener('mouseenter', function () { focus(i); });
      entry.addEventListener('mouseleave', function () { focus(null); });
      return entry;
    });
    function all(hidden) {
      data.runs.forEach(function (run, i) {
        state.hidden[i] = hidden;
        entries[i].classList.toggle('off', hidden);
      });
      drawAll();
    }
    document.getElementById('show-all').addEventListener('click', function () { all(false); });
    document.getElementById('hide-all').addEventListener('click', function () { all(true); });
  }

  function controls() {
    var log = document.getElementById('log-y');
    var slider = document.getElementById('smoothing');
    var shown = document.getElementById('smoothing-value');
    if (!log || !slider) return;
    log.addEventListener('change', function () {
      state.log = log.checked;
      drawAll();
    });
    var pending = false;
    slider.addEventListener('input', function () {
      state.smoothing = Math.min(0.99, Math.max(0, parseFloat(slider.value) || 0));
      shown.textContent = String(state.smoothing);
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        drawAll();
      });
    });
  }

  // A small chart of each run's own losses, each on its own scale. The highest and lowest
  // values are labelled in a margin to the right of the plot, where no curve runs.
  function minis() {
    var box = document.getElementById('minis');
    if (!box || !NS) return;
    var w = 260, h = 120, m = 6, right = 62;
    data.runs.forEach(function (run, i) {
      var fig = node('figure', 'mini status-' + run.status.replace(/[^a-z]/g, ''), undefined, box);
      var caption = node('figcaption', '', undefined, fig);
      node('span', 'name', run.label, caption).title = run.label;
      node('span', 'status', run.status, caption);
      var frame = svg('svg', { viewBox: '0 0 ' + w + ' ' + h, class: 'mini-plot' }, fig);
      var curves = data.own.map(function (metric) { return run.curves[metric]; });
      var lo = Infinity, hi = -Infinity, x0 = Infinity, x1 = -Infinity;
      curves.forEach(function (c) {
        if (!c) return;
        for (var j = 0; j < c.y.length; j++) {
          if (c.y[j] < lo) lo = c.y[j];
          if (c.y[j] > hi) hi = c.y[j];
        }
        x0 = Math.min(x0, c.x[0]);
        x1 = Math.max(x1, c.x[c.x.length - 1]);
      });
      if (!(hi >= lo)) {
        svg('text', { x: String(w / 2), y: String(h / 2), class: 'empty' }, frame).textContent =
          'no losses logged';
      } else {
        var top = hi, bottom = lo;
        if (hi === lo) { hi += 1; lo -= 1; }
        if (x1 === x0) { x1 += 1; x0 -= 1; }
        var edge = w - right;
        var sx = (edge - 2 * m) / (x1 - x0), sy = (h - 2 * m) / (hi - lo);
        svg('line', { class: 'axis', x1: edge, x2: edge, y1: m, y2: h - m }, frame);
        curves.forEach(function (c, k) {
          if (!c) return;
          var parts = new Array(c.x.length);
          for (var j = 0; j < c.x.length; j++) {
            parts[j] = (j ? 'L' : 'M') + (m + (c.x[j] - x0) * sx).toFixed(1) + ' ' +
              (h - m - (c.y[j] - lo) * sy).toFixed(1);
          }
          svg('path', {
            class: 'mini-curve' + (k ? ' dashed' : '') + (run.status === 'pruned' ? ' pruned' : ''),
            stroke: color(i), d: parts.join('')
          }, frame);
        });
        var at = function (v) { return h - m - (v - lo) * sy; };
        svg('text', { x: String(edge + 4), y: (at(top) + 4).toFixed(1), class: 'tick mini-value' }, frame)
          .textContent = fmt(top);
        if (bottom !== top) {
          svg('text', { x: String(edge + 4), y: (at(bottom) + 4).toFixed(1), class: 'tick mini-value' }, frame)
            .textContent = fmt(bottom);
        }
      }
      if (run.reason) node('p', 'reason', run.reason, fig);
    });
  }

  // Sorts by a heading's column on click, again to reverse; blanks stay last.
  function sortable(table) {
    var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      var sort = function () {
        var up = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
        var numeric = th.getAttribute('data-type') === 'num';
        var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
          var text = tr.cells[col] ? tr.cells[col].textContent : '';
          return { tr: tr, i: i, text: text, num: numeric ? parseFloat(text) : NaN };
        });
        rows.sort(function (a, b) {
          var blankA = numeric ? isNaN(a.num) : a.text === '';
          var blankB = numeric ? isNaN(b.num) : b.text === '';
          if (blankA !== blankB) return blankA ? 1 : -1;
          var d = numeric ? a.num - b.num : a.text.localeCompare(b.text, undefined, { numeric: true });
          return (up ? d : -d) || a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.tr); });
      };
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (ev) {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); sort(); }
      });
    });
  }

  var table = document.getElementById('runs-table');
  if (table) sortable(table);
  legend();
  controls();
  drawAll();
  minis();
  // When the drawn page was first painted, from navigation start: the benchmark of large
  // reports reads it.
  window.requestAnimationFrame(function () {
    window.setTimeout(function () {
      document.body.setAttribute('data-drawn-ms', performance.now().toFixed(0));
    }, 0);
  });
})();
