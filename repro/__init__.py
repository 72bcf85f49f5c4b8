"""FroSSL reproducibility artifact: trainer, losses, methods and evaluation.

Data flows one way: data_prep -> repro.data -> repro.models / repro.methods -> repro.train
-> repro.evaluate -> results (JSON in the run folder) -> check -> report.
"""
