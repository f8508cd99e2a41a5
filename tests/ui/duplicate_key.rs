use brainstate::{NodeName, Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[allow(non_snake_case)]
    V: Variable,
    #[stateful(rename = "V")]
    v: Variable,
}

fn main() {}
