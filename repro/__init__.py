"""FroSSL reproducibility artifact: trainer, losses, methods and evaluation.

Data flows one way: data_prep -> repro.formats (FFCV files, the dataset catalog, epoch order)
<- repro.data -> repro.models / repro.methods -> repro.train -> repro.evaluate -> results (JSON
in the run folder) -> check -> report. The layers, bottom to top, are written down once in
tests/test_layers.py, which checks every import against them.
"""
