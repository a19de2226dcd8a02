/* headwise report, the page: the views built and drawn; start() runs last, once every piece is defined. */

// ------------------------------------------------------------------------------------------ the page

function buildPage(report) {
  const main = el('main', {}, [
    el('header', { className: 'page' }, [
      el('h1', { testid: 'title', text: report.title }),
      el('p', { testid: 'description', text: report.description }),
      el('nav', { className: 'sections', 'aria-label': 'Sections' }, [
        el('a', { href: '#walkthrough', text: 'Step by step' }),
        el('a', { href: '#head-view', text: 'Head view' }),
        el('a', { href: '#model-view', text: 'Model view' }),
      ]),
    ]),
  ]);
  document.body.append(main, tooltip);
  main.append(buildWalkthrough(report), buildHeadView(report), buildModelView(report));
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
