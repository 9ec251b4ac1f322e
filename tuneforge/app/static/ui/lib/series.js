/* A job's metric series as the pages read them: what is drawn, and how streamed points join the series. */

// Points per series read for a chart; the API downsamples (max_points).
export const MAX_POINTS = 1000;

// [key, chart title]. Token accuracy is logged as extra.train_mean_token_accuracy (and
// extra.valid_mean_token_accuracy at evaluations).
export const METRICS = [
  ["loss", "Loss"],
  ["eval_loss", "Eval loss"],
  ["learning_rate", "Learning rate"],
  ["grad_norm", "Grad norm"],
  ["tokens_per_second", "Tokens/s"],
  ["train_mean_token_accuracy", "Token accuracy"],
  ["valid_mean_token_accuracy", "Eval token accuracy"],
];

// Reinforcement jobs' own series (methods/rft.py): the mean reward of the completions sampled at each
// step, the greedy validation reward of each evaluation (extra.valid_reward), the KL to the base, and
// the share of groups whose samples all scored the same (no signal).
export const RFT_METRICS = [
  ["reward", "Reward (sampled)"],
  ["valid_reward", "Eval reward (greedy)"],
  ["kl", "KL to the base"],
  ["no_signal_groups", "Groups with no signal"],
  ["mean_completion_length", "Completion length"],
];

/* The charts of a job: every job's, then its method's. */
export const metricsOf = (job) =>
  job.spec && job.spec.method === "reinforcement" ? [...METRICS, ...RFT_METRICS] : METRICS;

const present = (value) => value !== null && value !== undefined;

/* A point's value for `key`, from its own fields or its `extra`; null where it has none. */
export function metricValue(point, key) {
  if (key in point && present(point[key])) {
    return point[key];
  }
  if (point.extra && key in point.extra) {
    return point.extra[key];
  }
  return null;
}

/* [[step, value], ...] of one metric, for a chart. */
export const curve = (points, key) => points.map((point) => [point.step, metricValue(point, key)]);

/* A streamed point for a step already drawn (an evaluation after the train step) fills in its nulls. */
export function mergePoints(old, fresh) {
  const byStep = new Map(old.map((point) => [point.step, point]));
  for (const point of fresh) {
    const prev = byStep.get(point.step);
    if (!prev) {
      byStep.set(point.step, point);
      continue;
    }
    const merged = { ...prev, extra: { ...(prev.extra || {}), ...(point.extra || {}) } };
    for (const [key, value] of Object.entries(point)) {
      if (key !== "extra" && present(value)) {
        merged[key] = value;
      }
    }
    byStep.set(point.step, merged);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/* A page left open on a long job keeps at most 2 * MAX_POINTS: every other point goes (never the
   last, nor an evaluation). */
export function thin(points) {
  if (points.length <= 2 * MAX_POINTS) {
    return points;
  }
  const last = points.length - 1;
  return points.filter((point, index) => index % 2 === 0 || index === last || present(point.eval_loss));
}
