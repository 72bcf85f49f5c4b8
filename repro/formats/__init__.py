"""What is fixed about the data whatever loader reads it, importable without torch's data loaders
(the converters in data_prep/ import only this package, repro.seeds and repro.cli):

- catalog.py: one record per dataset (classes, native size, splits and their sizes, where the
  source files live, where they download from, which converter writes the FFCV files).
- order.py: which images an epoch visits in which batches, and the fixed subset rule.
- beton.py: the FFCV file format (names, manifest, inspection, verification, rebuild command).
"""
