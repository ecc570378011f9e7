#[derive(filechannel::Message)]
#[message(version = 1, colour = "red")]
struct A;

fn main() {}
