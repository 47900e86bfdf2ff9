"""hataori's pipeline: CLI and (in later stages) the Prefect flows that chain the stages.

Importing this package stays cheap: Prefect, torch and friends are imported by the modules that
need them, never here.
"""
