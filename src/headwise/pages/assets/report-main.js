/* headwise report, the page: the views built and drawn; start() runs last, once every piece is defined. */

// ------------------------------------------------------------------------------------------ the page

function buildPage(report) {
  // Only the views this report has something for: no section, and no link to it, stands empty.
  const views = [
    report.steps.length ? ['walkthrough', 'Step by step', buildWalkthrough] : null,
    report.maps.length ? ['head-view', 'Head view', buildHeadView] : null,
    report.maps.length ? ['model-view', 'Model view', buildModelView] : null,
    report.neurons ? ['neuron-view', 'Neuron view', buildNeuronView] : null,
    report.playgrounds.length ? ['playground', 'Your own numbers', buildPlayground] : null,
  ].filter(Boolean);
  const links = views.map(([id, title]) => el('a', { href: `#${id}`, text: title }));
  const main = el('main', {}, [
    el('header', { className: 'page' }, [
      el('h1', { testid: 'title', text: report.title }),
      el('p', { testid: 'description', text: report.description }),
      views.length
        ? el('nav', { className: 'sections', 'aria-label': 'Sections' }, links)
        : el('p', { className: 'note', testid: 'nothing', text: 'This report has no steps and no maps.' }),
    ]),
  ]);
  document.body.append(main, tooltip);
  main.append(...views.map(([, , build]) => build(report)));
}

async function start() {
  try {
    const report = await readReport();
    // For tests and the curious: the decoded report, and one weight by its indices.
    window.headwise = {
      report: report,
      weight: (m, layer, head, i, j) => {
        const map = report.maps[m];
        return map.values[mapOffset(map, layer, head) + i * map.nk + j];
      },
    };
    buildPage(report);
    lazy.built = true;
    requestAnimationFrame(() => requestAnimationFrame(checkReady));
  } catch (error) {
    const text = `This report could not be drawn: ${error}`;
    document.body.append(el('p', { className: 'error', testid: 'error', text: text }));
    document.body.dataset.error = String(error);
  }
}

start();
