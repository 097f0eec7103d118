"""matplotlib for the reports' figures, imported only when a figure is drawn."""


def pyplot():
    """`matplotlib.pyplot` on the Agg backend: figures are written to files, no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
