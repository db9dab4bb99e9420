/* stem-refine report: a small 3-D viewer of the refined structure (no libraries, no network).
 *
 * Reads the JSON object in the script element #structure-data (refine/report/viewer_data.py): positions (Å, centred,
 * image frame: x right, y up, beam along z), radii (Å), symbols and colour fields. Draws shaded spheres on a 2-D
 * canvas, back to front (painter's algorithm; orthographic projection, as the beam sees the particle).
 * Drag rotates, the wheel zooms, a double-click resets; the buttons look along the beam or from the side.
 * After each drawing the canvas carries data-rendered="N atoms", data-field (the colouring) and data-box
 * (its place on the page, CSS px: left, top, width, height); the page's test reads them.
 */
(function () {
  "use strict";

  var BACKGROUND = "#ffffff";
  var SPRITE = 96; // px: one shaded sphere per colour, drawn once and scaled

  function hexToRgb(hex) {
    var v = parseInt(hex.slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  function mix(rgb, target, t) {
    return "rgb(" + rgb.map(function (c, i) { return Math.round(c + (target[i] - c) * t); }).join(",") + ")";
  }

  function multiply(A, B) {
    var C = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
    for (var i = 0; i < 3; i++) {
      for (var j = 0; j < 3; j++) {
        C[i][j] = A[i][0] * B[0][j] + A[i][1] * B[1][j] + A[i][2] * B[2][j];
      }
    }
    return C;
  }

  function rotationX(t) {
    var c = Math.cos(t), s = Math.sin(t);
    return [[1, 0, 0], [0, c, -s], [0, s, c]];
  }

  function rotationY(t) {
    var c = Math.cos(t), s = Math.sin(t);
    return [[c, 0, s], [0, 1, 0], [-s, 0, c]];
  }

  var VIEWS = {
    beam: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], // down the beam: as the image shows it (x right, y up)
    side: [[1, 0, 0], [0, 0, 1], [0, -1, 0]] // beam upwards on the screen: heights along the beam
  };

  function Viewer(canvas, data, parts) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.data = data;
    this.parts = parts;
    this.n = data.positions.length;
    this.R = VIEWS.beam;
    this.zoom = 1.0;
    this.sprites = {};
    this.fields = {};
    for (var k = 0; k < data.fields.length; k++) this.fields[data.fields[k].name] = data.fields[k];
    this.field = this.fields[data["default"]] || data.fields[0];
    this.draws = 0;
    this.extent = 1.0;
    for (var i = 0; i < this.n; i++) {
      var p = data.positions[i];
      this.extent = Math.max(this.extent, Math.sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) + data.radii[i]);
    }
    this.bind();
    this.resize();
    this.showLegend();
  }

  Viewer.prototype.sprite = function (hex) {
    var s = this.sprites[hex];
    if (s) return s;
    s = document.createElement("canvas");
    s.width = s.height = SPRITE;
    var c = s.getContext("2d"), r = SPRITE / 2, rgb = hexToRgb(hex);
    // light from the upper left, towards the viewer: highlight, body colour, dark rim
    var g = c.createRadialGradient(r * 0.65, r * 0.65, r * 0.05, r, r, r);
    g.addColorStop(0.0, mix(rgb, [255, 255, 255], 0.75));
    g.addColorStop(0.35, mix(rgb, [255, 255, 255], 0.1));
    g.addColorStop(0.85, mix(rgb, [0, 0, 0], 0.35));
    g.addColorStop(1.0, mix(rgb, [0, 0, 0], 0.6));
    c.fillStyle = g;
    c.beginPath();
    c.arc(r, r, r - 0.5, 0, 2 * Math.PI);
    c.fill();
    this.sprites[hex] = s;
    return s;
  };

  Viewer.prototype.resize = function () {
    var dpr = window.devicePixelRatio || 1;
    var w = this.canvas.clientWidth || 800, h = this.canvas.clientHeight || 560;
    this.width = w;
    this.height = h;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.draw();
  };

  Viewer.prototype.scale = function () {
    return this.zoom * 0.46 * Math.min(this.width, this.height) / this.extent; // px per Å
  };

  Viewer.prototype.project = function () {
    var R = this.R, P = this.data.positions, s = this.scale(), cx = this.width / 2, cy = this.height / 2;
    var out = new Array(this.n);
    for (var i = 0; i < this.n; i++) {
      var p = P[i];
      out[i] = {
        i: i,
        x: cx + s * (R[0][0] * p[0] + R[0][1] * p[1] + R[0][2] * p[2]),
        y: cy - s * (R[1][0] * p[0] + R[1][1] * p[1] + R[1][2] * p[2]),
        z: R[2][0] * p[0] + R[2][1] * p[1] + R[2][2] * p[2],
        r: s * this.data.radii[i]
      };
    }
    out.sort(function (a, b) { return a.z - b.z; }); // far first, near last
    return out;
  };

  Viewer.prototype.draw = function () {
    var ctx = this.ctx;
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, this.width, this.height);
    var atoms = this.project(), colours = this.field.colours;
    for (var k = 0; k < atoms.length; k++) {
      var a = atoms[k];
      ctx.drawImage(this.sprite(colours[a.i]), a.x - a.r, a.y - a.r, 2 * a.r, 2 * a.r);
    }
    this.projected = atoms;
    this.drawAxes();
    this.draws += 1;
    this.canvas.setAttribute("data-rendered", this.n + " atoms");
    this.canvas.setAttribute("data-field", this.field.name);
    var box = this.canvas.getBoundingClientRect(); // page coordinates (CSS px), for a screenshot check
    this.canvas.setAttribute("data-box", [box.left + window.scrollX, box.top + window.scrollY, box.width,
      box.height].map(Math.round).join(","));
  };

  Viewer.prototype.drawAxes = function () {
    var ctx = this.ctx, R = this.R, ox = 46, oy = this.height - 46, L = 30;
    var names = ["x", "y", "z (beam)"], colours = ["#d62728", "#2ca02c", "#1f77b4"];
    ctx.lineWidth = 2;
    ctx.font = "12px sans-serif";
    for (var k = 0; k < 3; k++) {
      var dx = R[0][k] * L, dy = -R[1][k] * L;
      ctx.strokeStyle = ctx.fillStyle = colours[k];
      ctx.beginPath();
      if (dx * dx + dy * dy < 0.06 * L * L) { // along the line of sight: a dot (towards you) or a cross (away)
        var towards = R[2][k] > 0;
        ctx.arc(ox, oy, 5, 0, 2 * Math.PI);
        if (!towards) { ctx.moveTo(ox - 3.5, oy - 3.5); ctx.lineTo(ox + 3.5, oy + 3.5);
                        ctx.moveTo(ox + 3.5, oy - 3.5); ctx.lineTo(ox - 3.5, oy + 3.5); }
        ctx.stroke();
        if (towards) ctx.fillRect(ox - 1.5, oy - 1.5, 3, 3);
        ctx.fillText(names[k] + (towards ? ", towards you" : ", away from you"), ox + 9, oy + 20);
        continue;
      }
      ctx.moveTo(ox, oy);
      ctx.lineTo(ox + dx, oy + dy);
      ctx.stroke();
      ctx.fillText(names[k], ox + dx * 1.2 + 2, oy + dy * 1.2 + 4);
    }
  };

  Viewer.prototype.rotate = function (dx, dy) {
    this.R = multiply(multiply(rotationY(dx * 0.01), rotationX(dy * 0.01)), this.R);
    this.draw();
  };

  Viewer.prototype.setView = function (name) {
    if (name === "reset") {
      this.R = VIEWS.beam;
      this.zoom = 1.0;
    } else {
      this.R = VIEWS[name];
    }
    this.draw();
  };

  Viewer.prototype.setField = function (name) {
    this.field = this.fields[name];
    this.draw();
    this.showLegend();
  };

  Viewer.prototype.atomAt = function (x, y) {
    var atoms = this.projected || [];
    for (var k = atoms.length - 1; k >= 0; k--) { // nearest first
      var a = atoms[k], dx = x - a.x, dy = y - a.y;
      if (dx * dx + dy * dy <= a.r * a.r) return a.i;
    }
    return -1;
  };

  Viewer.prototype.describe = function (i) {
    var parts = ["atom " + i, this.data.symbols[i]];
    for (var k = 0; k < this.data.fields.length; k++) {
      var f = this.data.fields[k];
      if (f.name !== "element") parts.push(f.label + ": " + f.values[i]);
    }
    return parts.join(" · ");
  };

  Viewer.prototype.showLegend = function () {
    var box = this.parts.legend, f = this.field, legend = f.legend;
    if (!box) return;
    while (box.firstChild) box.removeChild(box.firstChild);
    var title = document.createElement("div");
    title.className = "legend-title";
    title.textContent = f.label;
    box.appendChild(title);
    if (legend.kind === "continuous") {
      var bar = document.createElement("div");
      bar.className = "legend-bar";
      bar.style.background = "linear-gradient(to right, " + legend.stops.join(", ") + ")";
      box.appendChild(bar);
      var ticks = document.createElement("div");
      ticks.className = "legend-ticks";
      var lo = document.createElement("span"), hi = document.createElement("span");
      lo.textContent = Number(legend.min).toPrecision(3);
      hi.textContent = Number(legend.max).toPrecision(3);
      ticks.appendChild(lo);
      ticks.appendChild(hi);
      box.appendChild(ticks);
    } else {
      for (var k = 0; k < legend.items.length; k++) {
        var item = document.createElement("span"), sw = document.createElement("span");
        item.className = "legend-item";
        sw.className = "swatch";
        sw.style.background = legend.items[k][1];
        item.appendChild(sw);
        item.appendChild(document.createTextNode(legend.items[k][0] + " (" + legend.items[k][2] + ")"));
        box.appendChild(item);
      }
    }
  };

  Viewer.prototype.bind = function () {
    var self = this, canvas = this.canvas, last = null, tip = this.parts.tooltip;
    canvas.addEventListener("pointerdown", function (e) {
      last = [e.clientX, e.clientY];
      try {
        canvas.setPointerCapture(e.pointerId); // keep rotating when the pointer leaves the canvas mid-drag
      } catch (err) { /* a pointer the browser does not track (synthetic events): rotate without capture */ }
      if (tip) tip.hidden = true;
    });
    canvas.addEventListener("pointermove", function (e) {
      if (last) {
        self.rotate(e.clientX - last[0], e.clientY - last[1]);
        last = [e.clientX, e.clientY];
        return;
      }
      if (!tip) return;
      var rect = canvas.getBoundingClientRect(), i = self.atomAt(e.clientX - rect.left, e.clientY - rect.top);
      tip.hidden = i < 0;
      if (i >= 0) {
        tip.textContent = self.describe(i);
        tip.style.left = (e.clientX - rect.left + 14) + "px";
        tip.style.top = (e.clientY - rect.top + 14) + "px";
      }
    });
    function release() { last = null; }
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("pointerleave", function () { if (tip) tip.hidden = true; });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault(); // zoom the particle, not the page
      self.zoom = Math.min(20, Math.max(0.2, self.zoom * Math.exp(-e.deltaY * 0.0015)));
      self.draw();
    }, { passive: false });
    canvas.addEventListener("dblclick", function () { self.setView("reset"); });
    if (this.parts.select) {
      this.parts.select.addEventListener("change", function () { self.setField(this.value); });
    }
    var buttons = this.parts.buttons || [];
    for (var k = 0; k < buttons.length; k++) {
      buttons[k].addEventListener("click", function () { self.setView(this.getAttribute("data-view")); });
    }
    window.addEventListener("resize", function () { self.resize(); });
  };

  function start() {
    var source = document.getElementById("structure-data"), canvas = document.getElementById("viewer");
    if (!source || !canvas || !canvas.getContext) return;
    var data = JSON.parse(source.textContent);
    var select = document.getElementById("colour-by");
    if (select) {
      for (var k = 0; k < data.fields.length; k++) {
        var o = document.createElement("option");
        o.value = data.fields[k].name;
        o.textContent = data.fields[k].label;
        o.selected = data.fields[k].name === data["default"];
        select.appendChild(o);
      }
    }
    window.stemRefineViewer = new Viewer(canvas, data, {
      legend: document.getElementById("viewer-legend"),
      tooltip: document.getElementById("viewer-tip"),
      select: select,
      buttons: document.querySelectorAll("button[data-view]")
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
