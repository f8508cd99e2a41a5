use brainstate::{NodeName, Stateful, Variable};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "a")]
    #[stateful(rename = "b")]
    v: Variable,
}

fn main() {}
