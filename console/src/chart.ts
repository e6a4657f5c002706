// A small SVG line chart of the queue over time: depth per kind, drawn from the samples the
// admin page has taken since it opened.

const WIDTH = 480;
const HEIGHT = 120;
const NS = "http://www.w3.org/2000/svg";

export interface Series {
  label: string;
  points: number[];
}

export function lineChart(title: string, series: Series[]): SVGSVGElement {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  svg.classList.add("chart");
  const max = Math.max(1, ...series.flatMap((s) => s.points));
  const longest = Math.max(2, ...series.map((s) => s.points.length));
  series.forEach((line, index) => {
    const path = document.createElementNS(NS, "polyline");
    const points = line.points
      .map((value, i) => {
        const x = (i / (longest - 1)) * (WIDTH - 8) + 4;
        const y = HEIGHT - 4 - (value / max) * (HEIGHT - 8);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(" ");
    path.setAttribute("points", points);
    path.setAttribute("class", `line line-${index % 6}`);
    const label = document.createElementNS(NS, "title");
    label.textContent = `${line.label}: ${line.points.at(-1) ?? 0}`;
    path.append(label);
    svg.append(path);
  });
  const top = document.createElementNS(NS, "text");
  top.setAttribute("x", "4");
  top.setAttribute("y", "12");
  top.setAttribute("class", "axis");
  top.textContent = String(max);
  svg.append(top);
  return svg;
}
