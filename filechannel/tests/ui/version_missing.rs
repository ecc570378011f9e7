#[derive(filechannel::Message)]
#[message(name = "t.A")]
struct A;

fn main() {}
