"""Pages about attention: the page model that headwise.explain and headwise.inspection both make, and its
renderers. Neither application imports the other; both import this package.

model.py   Report and what it holds: WalkStep (labelled Matrix values, Checks), HeadMaps, NeuronData,
           Playground; LEGEND, the shape legend's words
html.py    a Report as one self-contained HTML page (assets/: the page's CSS and its script, one file a view)
png.py     a Report as PNG figures (needs matplotlib)
"""
