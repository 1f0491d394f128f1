"""The side-by-side training run: a synthetic task, one lane per framework, the loop, the chart."""
