"""What every model package, codec plugin and stage stands on: JSON configs, the errors and
their kinds, checkpoint key maps, safe checkpoint reading, our checkpoint directories and
compute precision. It imports no other package of the project."""
