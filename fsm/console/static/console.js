// fsm console: the little the pages do in the browser.
// - A kind's page reads its counts every data-poll seconds (census.json) and, when they
//   moved, fetches its diagram again and swaps it in: no reload. States in trouble get a
//   class (broken, quarantined, late); clicking a state lists its actions.
// - A control asks for confirmation before its form is sent.
"use strict";

function nodeName(g) {
  const title = g.querySelector("title");
  return title ? title.textContent : null;
}

function paint(box, census) {
  const svg = box.querySelector("svg");
  if (!svg) return;
  svg.querySelectorAll("g.node").forEach((g) => {
    const name = nodeName(g);
    const c = census.states[name];
    g.classList.toggle("broken", !!(c && c.broken));
    g.classList.toggle("quarantined", !!(c && c.quarantined));
    g.classList.toggle("late", !!(c && c.late));
    g.classList.toggle("busy", !!(c && c.live));
    if (name && !g.dataset.linked && name !== "__start__") {
      g.dataset.linked = "1";
      g.addEventListener("click", () => {
        const q = new URLSearchParams({ kind: census.kind, state: name, status: "live" });
        window.location.href = "/actions?" + q.toString();
      });
    }
  });
}

function fillTable(census) {
  document.querySelectorAll("#states tr[data-state]").forEach((row) => {
    const c = census.states[row.dataset.state] || { live: 0, broken: 0, quarantined: 0, waited: 0 };
    row.querySelector(".live").textContent = c.live;
    row.querySelector(".broken").textContent = c.broken;
    row.querySelector(".quarantined").textContent = c.quarantined;
    row.querySelector(".waited").textContent = c.waited ? c.waited + " s" : "-";
  });
  const small = document.querySelector("h1 small");
  if (small) small.textContent = census.live + " live";
}

function signature(census) {
  // what the drawing shows (the counts), not the waits, which move every second
  return JSON.stringify(Object.keys(census.states).sort().map((s) => [s, census.states[s].live]));
}

function watchKind(box) {
  const first = JSON.parse(box.dataset.counts);
  let last = signature(first);
  paint(box, first);
  const every = Math.max(0.2, parseFloat(box.dataset.poll || "2")) * 1000;
  async function tick() {
    try {
      const got = await fetch(box.dataset.census, { headers: { Accept: "application/json" } });
      if (got.ok) {
        const census = await got.json();
        const text = signature(census);
        if (text !== last) {
          const drawn = await fetch(box.dataset.svg);
          if (drawn.ok) {
            box.innerHTML = await drawn.text();
            last = text;
            box.dataset.counts = JSON.stringify(census);
          }
        }
        fillTable(census);
        paint(box, census);
        box.dataset.polled = String((parseInt(box.dataset.polled || "0", 10) + 1));
      }
    } catch (e) {
      // the console stopped or the network is down: try again at the next tick
    }
    window.setTimeout(tick, every);
  }
  window.setTimeout(tick, every);
}

function confirmControls() {
  document.querySelectorAll("form.control").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("diagram");
  if (box && box.dataset.census) watchKind(box);
  confirmControls();
});
