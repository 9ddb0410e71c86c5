"""The main GAP: gap_fit command lines and runs, the SOAP fit on the residual, and its settings."""
