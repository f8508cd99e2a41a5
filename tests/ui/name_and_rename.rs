use brainstate::{NodeName, Stateful};

#[derive(Stateful)]
struct Lif {
    #[stateful(name, rename = "n")]
    name: NodeName,
}

fn main() {}
