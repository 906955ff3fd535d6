"""The seed's causal-abstraction tutorial: train a small MLP on a + b + c, then find (a + b)
in its first hidden layer with DAS (RotatedSpaceIntervention), with two controls.

    python examples/das_three_sum.py
"""

from recipes import das

net, acc = das.train_mlp()
print(f"MLP accuracy {acc:.3f}")
for name, kwargs in [("DAS, variable a+b", {}), ("untrained rotation", {"train": False}),
                     ("DAS, wrong variable b+c", {"variable": "b+c"})]:
    result = das.das(net, layer=0, dim=16, **kwargs)
    print(f"{name:26s} held-out IIA {result['iia']:.3f}")
    if not kwargs:
        result["model"].save("results/das_rotation")  # config.json + tensors.safetensors
