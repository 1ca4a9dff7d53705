"""Server-rendered pages of the control plane."""
