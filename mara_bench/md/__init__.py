"""Molecular dynamics with a trained model: ASE calculator, replicas and measurements, failure criteria, MD for a run
folder, and the MD tables/figures of reports."""
