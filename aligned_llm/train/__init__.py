"""Training utilities (the ``train`` extra): the bundled DPO adapter's recipe."""
