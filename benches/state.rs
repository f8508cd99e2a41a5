//! save_state / load_state of a model with 10,000 variables of 100 f32, beside a plain copy of
//! the same tensors (the cost of copying the bytes), so the per-variable overhead is the
//! difference divided by 10,000.
use brainstate::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ndarray::Array1;

#[derive(Stateful)]
struct Layer {
    #[stateful(name)]
    name: NodeName,
    vars: Vec<Variable>,
}

#[derive(Stateful)]
struct Model {
    #[stateful(name)]
    name: NodeName,
    layers: Vec<Layer>,
}

fn model() -> Model {
    let layers = (0..100)
        .map(|l| Layer {
            name: NodeName::auto(),
            vars: (0..100)
                .map(|i| Variable::new(Array1::from_elem(100, (l * 100 + i) as f32)))
                .collect(),
        })
        .collect();
    Model {
        name: NodeName::auto(),
        layers,
    }
}

fn bench(c: &mut Criterion) {
    let net = model();
    let tensors: Vec<Tensor> = variables(&net)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v.value().clone())
        .collect();
    assert_eq!(tensors.len(), 10_000);
    let tree = save_state(&net).unwrap();
    let mut g = c.benchmark_group("state_10k_vars_100_f32");
    g.bench_function("copy_bytes_only", |b| b.iter(|| tensors.clone()));
    g.bench_function("save_state", |b| b.iter(|| save_state(&net).unwrap()));
    g.bench_function("load_state", |b| {
        b.iter_batched_ref(
            model,
            |twin| load_state(twin, &tree).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
