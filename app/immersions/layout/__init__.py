"""The map of the network: its neuron graph and a multilevel force layout, cached with the model."""
