//! The tutorial's `YourClass`: a node with hand-written local save and load (keys `a`, `b`, `c`,
//! `d0`, `d1`), while the derive keeps its name and the traversal of children.
//!
//! Run: `cargo run --example custom_state`
use brainstate::*;
use ndarray::Array1;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Stateful)]
#[stateful(custom)]
struct YourClass {
    #[stateful(name)]
    name: NodeName,
    a: i64,
    b: Array1<f32>,
    c: Variable,
    d: Vec<Variable>,
}

impl YourClass {
    fn new(rng: &mut StdRng) -> YourClass {
        let mut rand = |n: usize| Array1::from_iter((0..n).map(|_| rng.gen::<f32>()));
        YourClass {
            name: NodeName::auto(),
            a: 1,
            b: rand(10),
            c: Variable::new(rand(3)),
            d: vec![Variable::new(rand(3)), Variable::new(rand(3))],
        }
    }
}

impl CustomState for YourClass {
    fn save_local(&self) -> StateDict {
        let mut s = StateDict::new();
        s.insert("a".into(), Tensor::scalar(self.a));
        s.insert("b".into(), Tensor::from(self.b.clone()));
        s.insert("c".into(), self.c.value().clone());
        for (i, elem) in self.d.iter().enumerate() {
            s.insert(format!("d{i}"), elem.value().clone());
        }
        s
    }

    fn check_local(&self, state: &StateDict, options: &LoadOptions) -> LocalCheck {
        let mut check = Checker::new(state, options);
        check
            .tensor("a", DType::I64, &[])
            .tensor("b", DType::F32, &[self.b.len()])
            .variable("c", &self.c);
        for (i, elem) in self.d.iter().enumerate() {
            check.variable(&format!("d{i}"), elem);
        }
        check.finish()
    }

    fn apply_local(&mut self, state: &StateDict, _options: &LoadOptions) {
        // Everything here was checked by `check_local`, so the conversions cannot fail.
        if let Some(a) = state.get("a").and_then(|t| t.as_slice::<i64>().ok()) {
            self.a = a[0];
        }
        if let Some(b) = state.get("b").and_then(|t| t.as_slice::<f32>().ok()) {
            self.b = Array1::from(b.to_vec());
        }
        if let Some(c) = state.get("c") {
            self.c.reset(c.clone());
        }
        for (i, elem) in self.d.iter_mut().enumerate() {
            if let Some(v) = state.get(&format!("d{i}")) {
                elem.reset(v.clone());
            }
        }
    }
}

/// Runs the example, printing to `out`.
pub fn run(out: &mut dyn std::io::Write) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0);
    let obj = YourClass::new(&mut rng);
    writeln!(out, "obj.save_state():")?;
    for (k, v) in obj.save_state().iter() {
        writeln!(out, "  {k}: {v:?}")?;
    }
    let state = save_state(&obj)?;
    writeln!(
        out,
        "save_state(&obj) keys: {:?}",
        state.keys().collect::<Vec<_>>()
    )?;

    let mut other = YourClass::new(&mut rng);
    other.a = 42;
    let report = load_state(&mut other, &state)?;
    writeln!(out, "load_state(&mut other, &state) -> {report}")?;
    writeln!(out, "other.a = {}, other.b[0] = {}", other.a, other.b[0])?;
    if save_state(&other)? != state {
        return Err("the loaded object does not hold the saved state".into());
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&mut std::io::stdout())
}
