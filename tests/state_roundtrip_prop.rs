//! Property test: random model trees round-trip through save_state / load_state bit for bit.
use brainstate::*;
use proptest::prelude::*;

#[derive(Stateful)]
struct Branch {
    #[stateful(name)]
    name: NodeName,
    vars: Vec<Variable>,
    kids: Vec<Box<dyn Stateful>>,
}

#[derive(Stateful)]
struct Leaf {
    #[stateful(name)]
    name: NodeName,
    x: Option<Variable>,
}

#[derive(Clone, Debug)]
enum Spec {
    Leaf(Option<(DType, Vec<usize>)>),
    Branch(Vec<(DType, Vec<usize>)>, Vec<Spec>),
}

fn var_spec() -> impl Strategy<Value = (DType, Vec<usize>)> {
    (0..DType::ALL.len(), prop::collection::vec(0usize..4, 0..3)).prop_map(|(d, s)| (DType::ALL[d], s))
}

fn spec() -> impl Strategy<Value = Spec> {
    let leaf = prop::option::of(var_spec()).prop_map(Spec::Leaf);
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            prop::collection::vec(var_spec(), 0..3),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(v, k)| Spec::Branch(v, k))
    })
}

/// Builds the model; `fill` gives each variable's bytes (random for the source, zeros for the twin).
fn build(spec: &Spec, fill: &mut dyn FnMut(DType, &[usize]) -> Tensor) -> Box<dyn Stateful> {
    match spec {
        Spec::Leaf(v) => Box::new(Leaf {
            name: NodeName::auto(),
            x: v.as_ref().map(|(d, s)| Variable::new(fill(*d, s))),
        }),
        Spec::Branch(vars, kids) => Box::new(Branch {
            name: NodeName::auto(),
            vars: vars.iter().map(|(d, s)| Variable::new(fill(*d, s))).collect(),
            kids: kids.iter().map(|k| build(k, fill)).collect(),
        }),
    }
}

fn random_tensor(bytes: &[u8], d: DType, s: &[usize]) -> Tensor {
    let n = checked_nbytes(d, s).unwrap();
    let mut raw: Vec<u8> = bytes.iter().cycle().take(n).copied().collect();
    if d == DType::Bool {
        raw.iter_mut().for_each(|b| *b &= 1);
    }
    Tensor::from_le_bytes(d, s, &raw).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_trees_round_trip(spec in spec(), seed in prop::collection::vec(any::<u8>(), 1..64)) {
        let root = Branch { name: NodeName::auto(), vars: vec![], kids: vec![build(&spec, &mut |d, s| random_tensor(&seed, d, s))] };
        let saved = save_state(&root).unwrap();
        let mut twin = Branch { name: NodeName::auto(), vars: vec![], kids: vec![build(&spec, &mut |d, s| Tensor::zeros(d, s).unwrap())] };
        let report = load_state(&mut twin, &saved).unwrap();
        prop_assert!(report.is_exact(), "{}", report);
        prop_assert_eq!(save_state(&twin).unwrap(), saved);
    }
}
