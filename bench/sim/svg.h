/* Line charts as standalone SVG 1.1 files for the fleet simulator, with no
 * dependency beyond the C library: plain text, no scripts, no external
 * fonts or style sheets (generic "sans-serif", presentation attributes).
 *
 * A chart is 900 x 500 px: a title, a plot area with horizontal and
 * vertical grid lines, a left y axis and a bottom x axis with tick marks
 * and labels, the axis labels, one line per series with a marker on each
 * point, and a legend on the right.
 *
 * Axes. x is always linear; y is linear or base-10 logarithmic. A linear
 * axis gets 5 to 8 "nice" ticks (steps 1, 2 or 5 times a power of ten);
 * with an automatic range the axis runs from the tick at or below the
 * smallest value to the tick at or above the largest (so 0..97 gives 0,
 * 20, 40, 60, 80, 100), widened by whole steps when fewer than 5 ticks
 * would fit. With a fixed y range the axis is exactly [y_min, y_max] and
 * its ticks are the multiples of the step inside it (then possibly fewer
 * than 5). A log axis spans whole decades (automatic range) and labels
 * each decade, 1, 2 and 5 in each decade when it spans at most two
 * decades, every 2nd, 5th, 10th ... decade when it spans more than eight;
 * unlabelled minor ticks mark 2..9 when it spans at most ten decades. A
 * range of one value is widened (v -+ 10 %, 0 -> [0, 1]; log: one decade
 * each side); no data at all gives [0, 1] (log: [1, 10]).
 *
 * Tick labels are exact decimals of the tick value, with the shortest
 * form: "0", "20", "1.2", "0.05", "-3"; from 1000 on with a suffix k, M,
 * G, T ("1k", "2.5k", "10k", "1M"); below 1e-6 and from 1e15 on in E
 * notation ("1e-7", "2.5e15"). The minus sign is "-".
 *
 * Series. One polyline per unbroken run of points: a point whose x or y
 * is NaN or infinite (on a log axis also y <= 0) is skipped and ends the
 * run, so a series without such points has exactly one polyline, and an
 * empty series (n == 0, or nothing drawable) none. Lines are clipped to
 * the plot area (plus a few px, so markers on the edge stay whole);
 * coordinates are clamped to +-1e6 px first. Points are drawn in the
 * given order (x need not be sorted). Series i has colour i % 8 of a
 * fixed palette and style (i / 8) % 4: solid line and circles, dashed
 * and squares, dotted and triangles, dash-dot and diamonds, so 32 series
 * are distinct. The legend lists the first 16 series (names longer than
 * 24 bytes are cut, the full name is in a <title> tooltip) then "+N more";
 * an empty series still has its entry. A NULL name is shown as "series
 * N" (1-based).
 *
 * Text (title, axis labels, names) is XML-escaped (& < > " ') and made
 * well-formed: control characters and bytes that are not UTF-8 become
 * "?". NULL title or axis label: none drawn.
 *
 * Output is byte-deterministic for the same input (numbers are written by
 * this code, never by printf's %f, so the locale does not matter;
 * coordinates have at most 2 decimals). About 50 bytes per point (its
 * polyline vertex and marker) plus 2 to 5 kB.
 *
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_BENCH_SIM_SVG_H
#define INFERLB_BENCH_SIM_SVG_H

#include <stddef.h>

typedef struct sim_series {
  const char *name; /* legend text (UTF-8), NULL: "series N" */
  const double *x;  /* n values, NULL: 0, 1, ..., n - 1 */
  const double *y;  /* n values; may be NULL only when n == 0 */
  size_t n;
} sim_series;

typedef struct sim_chart {
  const char *title, *xlabel, *ylabel; /* NULL: not drawn */
  int log_y;                           /* nonzero: base-10 log y axis */
  /* Fixed y range, used when y_max > y_min; 0, 0 (or any invalid pair)
   * = automatic. On a log axis a y_min <= 0 is replaced by the automatic
   * lower bound. */
  double y_min, y_max;
} sim_chart;

/* Writes the chart of n_series series (s may be NULL when n_series is 0;
 * c may be NULL: no title or labels, linear automatic axes) to path,
 * replacing it. 0, or -1 with err set: "cannot write PATH: reason",
 * "out of memory", "series N: y is NULL" (0-based), "invalid arguments"
 * (a NULL path or out, s NULL with n_series > 0); on a write error a
 * partly written file is removed. err may be NULL (errlen 0); messages
 * are truncated to errlen. */
int sim_svg_lines(const char *path, const sim_chart *c, const sim_series *s,
                  size_t n_series, char *err, size_t errlen);

/* The same document in memory: *out is a NUL-terminated malloc'ed string
 * of *len bytes (free it); on error *out is NULL and *len 0. */
int sim_svg_lines_buf(char **out, size_t *len, const sim_chart *c,
                      const sim_series *s, size_t n_series, char *err,
                      size_t errlen);

#endif
