"""Stage logic: what a stage does with a batch, as a plan the runtime carries out."""
