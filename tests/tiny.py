"""Settings shared by tests: a search small enough for a CPU test (mnv1 at width 0.25, a
third of the digits, one epoch at 16 px) and a small mnv1 genotype."""

TINY = ["+space=mnv1", "+budget.mflops=28", "proxy.epochs=1", "proxy.resolution=16",
        "proxy.subset=0.3", "space.width=[0.25]", "reference=false", "wandb.mode=disabled",
        "sampler.n_startup_trials=3", "pruner=none"]
GENOTYPE = ("res128_w0.5_drop0.0:stem_c16_k3_s2_p1_relu:ds_r1_k3_s1_c32_adp_relu_noskip:"
            "ds_r2_k3_s2_c64_adp_relu_skip:ds_r2_k3_s2_c128_adp_relu_skip")
