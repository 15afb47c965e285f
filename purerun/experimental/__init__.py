"""``purerun.experimental``: what Ray keeps under ``ray.experimental`` that purerun has.

- ``purerun.experimental.tqdm_ray``: progress bars in tasks and actors, drawn by the
  driver, one line per bar.
"""
