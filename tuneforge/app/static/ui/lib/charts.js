/* Charts as inline SVG (no library): each an image with a text alternative giving its latest values. */

import { h, svg } from "./dom.js";
import { fmtNum } from "./format.js";

export const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490"];
const colorOf = (index) => COLORS[index % COLORS.length];

const WIDTH = 400;
const HEIGHT = 180;
const LEFT = 46; // room for the y axis labels

const extent = (values) => [Math.min(...values), Math.max(...values)];
/* A range of one value is widened, so that its point is drawn in the middle. */
const widened = ([low, high]) => (low === high ? [low - 0.5, high + 0.5] : [low, high]);

function chartSvg(label) {
  return svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": label });
}

const axisLabel = (x, y, text, anchor) => svg("text", { x, y, "font-size": "10", "text-anchor": anchor, text });
const frame = (bottom) => svg("path", { d: `M${LEFT} 6V${bottom}H${WIDTH - 8}`, stroke: "#aaa", fill: "none" });

function axisNumber(value, log) {
  const shown = log ? 10 ** value : value;
  const extreme = Math.abs(shown) >= 1000 || (Math.abs(shown) < 0.01 && shown !== 0);
  return extreme ? shown.toExponential(1) : shown.toPrecision(log ? 2 : 3);
}

/* Curves over steps: series is [{label, points: [[step, value], ...]}]; `log` draws the values on a log axis. */
export function lineChart(title, series, { log = false } = {}) {
  const figure = h("figure", { "data-metric": title }, h("figcaption", { text: title }));
  const drawable = (point) => point[1] !== null && point[1] !== undefined && (!log || point[1] > 0);
  const scaled = (value) => (log ? Math.log10(Math.max(value, 1e-12)) : value);
  const points = series.flatMap((s) => s.points).filter(drawable);
  if (!points.length) {
    figure.append(h("p", { class: "muted", text: "no points yet" }));
    return figure;
  }
  let [x0, x1] = extent(points.map((point) => point[0]));
  if (x0 === x1) {
    x1 = x0 + 1;
  }
  const [y0, y1] = widened(extent(points.map((point) => scaled(point[1]))));
  const bottom = HEIGHT - 18;
  const toX = (x) => LEFT + ((x - x0) / (x1 - x0)) * (WIDTH - LEFT - 8);
  const toY = (y) => bottom - ((scaled(y) - y0) / (y1 - y0)) * (HEIGHT - 28);

  const latest = series.map((s) => {
    const last = s.points.filter((point) => point[1] !== null && point[1] !== undefined).at(-1);
    return last ? `${s.label} ${last[1].toPrecision(4)} at step ${last[0]}` : "";
  });
  const image = chartSvg(`${title}${log ? " (log scale)" : ""}: ${latest.filter(Boolean).join("; ")}`);
  image.append(
    axisLabel(LEFT - 3, 12, axisNumber(y1, log), "end"),
    axisLabel(LEFT - 3, bottom, axisNumber(y0, log), "end"),
    axisLabel(LEFT, HEIGHT - 4, x0, "start"),
    axisLabel(WIDTH - 8, HEIGHT - 4, `step ${x1}`, "end"),
    frame(bottom),
  );
  series.forEach((s, index) => {
    const good = s.points.filter(drawable);
    if (!good.length) {
      return;
    }
    const d = good.map((point, i) => `${i ? "L" : "M"}${toX(point[0]).toFixed(1)} ${toY(point[1]).toFixed(1)}`);
    const color = colorOf(index);
    const attrs = { d: d.join(""), stroke: color, fill: "none", "stroke-width": "1.6", "data-points": good.length };
    image.append(svg("path", attrs));
    if (good.length === 1) {
      image.append(svg("circle", { cx: toX(good[0][0]), cy: toY(good[0][1]), r: 3, fill: color }));
    }
  });
  figure.append(image);
  if (series.length > 1) {
    const keys = series.map((s, index) => h("span", { style: `color:${colorOf(index)}`, text: `■ ${s.label}` }));
    figure.append(h("div", { class: "legend" }, keys));
  }
  return figure;
}

/* The objective against one parameter, a dot per trial (`best`: the index of the best one, drawn
   larger). Categorical values are spread evenly; a parameter spanning more than 50x gets a log axis. */
export function scatterPlot(title, xs, ys, { best = -1, labels = [] } = {}) {
  const figure = h("figure", { "data-param": title }, h("figcaption", { text: title }));
  const trials = xs.map((x, index) => [x, ys[index], index]).filter(([, y]) => y !== null && y !== undefined);
  if (!trials.length) {
    figure.append(h("p", { class: "muted", text: "no finished trials yet" }));
    return figure;
  }
  const numeric = trials.every(([x]) => typeof x === "number");
  const categories = numeric ? [] : [...new Set(trials.map(([x]) => JSON.stringify(x)))];
  const position = (x) => (numeric ? x : categories.indexOf(JSON.stringify(x)));
  const [low, high] = extent(trials.map(([x]) => position(x)));
  const logX = numeric && low > 0 && high / low > 50;
  const scaledX = (x) => (logX ? Math.log10(position(x)) : position(x));
  const [x0, x1] = widened(extent(trials.map(([x]) => scaledX(x))));
  const [y0, y1] = widened(extent(trials.map(([, y]) => y)));
  const bottom = HEIGHT - 20;
  const toX = (scaled) => LEFT + ((scaled - x0) / (x1 - x0)) * (WIDTH - LEFT - 14) + 3;
  const toY = (y) => bottom - ((y - y0) / (y1 - y0)) * (HEIGHT - 32);
  const nameOf = (index) => labels[index] ?? index;

  const said = trials.map(([x, y, index]) => `trial ${nameOf(index)} ${JSON.stringify(x)} → ${fmtNum(y)}`);
  const image = chartSvg(`objective against ${title}: ${said.join("; ")}`);
  image.append(axisLabel(LEFT - 3, 12, fmtNum(y1), "end"), axisLabel(LEFT - 3, bottom, fmtNum(y0), "end"));
  if (numeric) {
    const tick = (value) => (logX ? (10 ** value).toExponential(1) : fmtNum(value));
    image.append(axisLabel(LEFT, HEIGHT - 4, tick(x0), "start"), axisLabel(WIDTH - 8, HEIGHT - 4, tick(x1), "end"));
  } else {
    categories.forEach((category, index) => image.append(axisLabel(toX(index), HEIGHT - 4, category, "middle")));
  }
  image.append(frame(bottom));
  for (const [x, y, index] of trials) {
    const isBest = index === best;
    const dot = svg(
      "circle",
      {
        cx: toX(scaledX(x)).toFixed(1),
        cy: toY(y).toFixed(1),
        r: isBest ? 5 : 3.5,
        fill: isBest ? COLORS[1] : COLORS[0],
        "data-trial": nameOf(index),
      },
      svg("title", { text: `trial ${nameOf(index)}: ${JSON.stringify(x)} → ${fmtNum(y)}` }),
    );
    image.append(dot);
  }
  figure.append(image);
  return figure;
}
