/* Numbers and times as the pages show them; "—" for a value the API does not have (yet). */

const missing = (value) => value === null || value === undefined;

/* A Unix time in the browser's locale. */
export const fmtTime = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "—");

/* A duration: seconds up to 90 s, minutes up to 90 min, then hours. */
export function fmtDur(seconds) {
  if (missing(seconds)) {
    return "—";
  }
  if (seconds < 90) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${(seconds / 3600).toFixed(1)} h`;
}

/* A metric or a parameter: integers as they are, other numbers to 4 significant digits. */
export function fmtNum(value) {
  if (missing(value)) {
    return "—";
  }
  if (typeof value !== "number") {
    return String(value);
  }
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
}

/* A parameter count: 135M, 1.7B. */
export function fmtParams(count) {
  if (missing(count)) {
    return "—";
  }
  const units = [
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [size, unit] of units) {
    if (count >= size) {
      return `${(count / size).toFixed(1)}${unit}`;
    }
  }
  return String(count);
}
